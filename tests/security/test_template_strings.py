"""render_string: the trusted/untrusted choice is explicit, and the sandbox still renders real templates."""

from __future__ import annotations

import pytest

from mailer import (
    HeaderInjectionError,
    TemplateError,
    TemplateSyntaxError,
    UndefinedVariableError,
    UnsafeTemplateError,
    render_string,
)
from mailer.templates.strings import MAX_SOURCE_SIZE, _compile

NEWSLETTER = """\
{% for product in products %}
{{ loop.index }}. {{ product.name|title }} - {{ "%.2f"|format(product.price) }} EUR{{ " (sale)" if product.sale }}
{% endfor %}
{{ tags|join(", ") }} / {{ "=" * 20 }} / {{ note|replace("x", "y")|center(30) }}
"""


def test_trusted_has_no_default() -> None:
    """Leaving out trusted= is a TypeError: every call site must choose."""
    with pytest.raises(TypeError, match="trusted"):
        render_string("s", "b", to="a@example.test")  # type: ignore[call-arg]


@pytest.mark.parametrize("trusted", [False, True])
def test_a_real_template_renders_the_same_trusted_or_not(trusted: bool) -> None:
    """Loops, filters, formatting and operators within the limits work in the sandbox too."""
    products = [
        {"name": f"item {n}", "price": n * 1.5, "sale": n % 2 == 0} for n in range(300)
    ]
    message = render_string(
        "Deals for {{ name }}\n",
        NEWSLETTER,
        "<p>{{ name }}</p>",
        trusted=trusted,
        to="a@example.test",
        context={
            "name": "Ann <Co>",
            "products": products,
            "tags": ["a", "b"],
            "note": "xox",
        },
    )
    assert message.subject == "Deals for Ann <Co>"
    assert "2. Item 1 - 1.50 EUR\n" in message.body
    assert "3. Item 2 - 3.00 EUR (sale)\n" in message.body
    assert "a, b / ==================== / " + "yoy".center(30) in message.body
    assert message.html == "<p>Ann &lt;Co&gt;</p>"


def test_trusted_templates_keep_the_features_the_sandbox_removes() -> None:
    """namespace() and large ranges work when the source is trusted."""
    source = "{% set ns = namespace(n=0) %}{% for i in range(200000) %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"
    assert (
        render_string("s", source, trusted=True, to="a@example.test").body == "200000"
    )
    with pytest.raises(UndefinedVariableError, match="namespace"):
        render_string("s", source, trusted=False, to="a@example.test")


def test_max_size_bounds_the_output_exactly() -> None:
    """max_size characters pass; one more is refused."""
    render_string(
        "s", "{{ 'x' * 10 }}", trusted=False, to="a@example.test", max_size=10
    )
    with pytest.raises(UnsafeTemplateError, match="size limit"):
        render_string(
            "s", "{{ 'x' * 11 }}", trusted=False, to="a@example.test", max_size=10
        )


def test_data_counts_against_the_limit_too() -> None:
    """A value larger than max_size is refused when an untrusted template prints it."""
    with pytest.raises(UnsafeTemplateError):
        render_string(
            "s", "{{ big }}", trusted=False, to="a@example.test",
            context={"big": "z" * 2000}, max_size=1000,
        )  # fmt: skip


def test_an_oversized_untrusted_source_is_refused_before_parsing() -> None:
    """Template sources over MAX_SOURCE_SIZE characters are refused, naming the part."""
    with pytest.raises(UnsafeTemplateError) as caught:
        render_string(
            "s", "x" * (MAX_SOURCE_SIZE + 1), trusted=False, to="a@example.test"
        )
    assert caught.value.template == "<string>/body"


def test_errors_inside_an_untrusted_template_are_one_line_template_errors() -> None:
    """1/0 in an untrusted template is the template's fault: TemplateError, not a crash."""
    with pytest.raises(TemplateError, match="ZeroDivisionError") as caught:
        render_string("s", "{{ 1 / 0 }}", trusted=False, to="a@example.test")
    assert "\n" not in str(caught.value)
    with pytest.raises(ZeroDivisionError):
        render_string("s", "{{ 1 / 0 }}", trusted=True, to="a@example.test")


def test_syntax_errors_name_the_part_and_line() -> None:
    """A syntax error says which string (subject, body, html) and which line."""
    with pytest.raises(TemplateSyntaxError) as caught:
        render_string("s", "ok", "line\n{% if %}", trusted=False, to="a@example.test")
    assert caught.value.template == "<string>/html"
    assert caught.value.line == 2


def test_the_rendered_subject_is_checked_for_newlines() -> None:
    """Data that puts a newline into the subject is refused naming the subject."""
    with pytest.raises(HeaderInjectionError) as caught:
        render_string(
            "Hi {{ name }}",
            "b",
            trusted=True,
            to="a@example.test",
            context={"name": "x\r\nBcc: e@example.test"},
        )
    assert caught.value.field == "subject"


def test_each_source_is_compiled_once() -> None:
    """Rendering the same strings for many rows compiles them once."""
    _compile.cache_clear()
    for n in range(5):
        render_string(
            "s {{ n }}", "b", trusted=False, to="a@example.test", context={"n": n}
        )
    assert _compile.cache_info().misses == 2
    assert _compile.cache_info().hits == 8
