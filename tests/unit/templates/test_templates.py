"""render(): template sets, escaping, undefined variables, lookup order, caching."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer import (
    HeaderInjectionError,
    Message,
    TemplateNotFoundError,
    TemplateSyntaxError,
    UndefinedVariableError,
    render,
)
from mailer.templates.sets import load_template_set


def make_set(root: Path, name: str, **files: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        (folder / filename.replace("_", ".", 1)).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A templates folder holding one set, "greet" (subject, text and HTML)."""
    root = tmp_path / "templates"
    make_set(
        root,
        "greet",
        subject_txt="Hello {{ name }}\n",
        body_txt="Hi {{ name }} & welcome <3\n",
        body_html="<p>Hi {{ name }}</p>\n",
    )
    return root


def test_renders_subject_text_and_html_into_a_message(templates: Path) -> None:
    """One template set gives the subject, text and HTML of one Message."""
    message = render(
        "greet", to="ann@example.test", context={"name": "Ann"}, templates_dir=templates
    )
    assert message == Message(
        to="ann@example.test",
        subject="Hello Ann",
        body="Hi Ann & welcome <3\n",
        html="<p>Hi Ann</p>\n",
    )


def test_html_is_escaped_and_text_and_subject_are_not(templates: Path) -> None:
    """Autoescape applies to body.html only."""
    name = '<script>alert("x")</script> & Co'
    message = render(
        "greet", to="a@example.test", context={"name": name}, templates_dir=templates
    )
    assert message.subject == f"Hello {name}"
    assert message.body.startswith(f"Hi {name} & welcome")
    assert (
        message.html
        == "<p>Hi &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co</p>\n"
    )


def test_only_one_trailing_newline_is_dropped_from_the_subject(tmp_path: Path) -> None:
    """subject.txt's final newline is dropped; the body keeps its own."""
    make_set(tmp_path, "s", subject_txt="Subject\n", body_txt="Body\n\n")
    message = render("s", to="a@example.test", templates_dir=tmp_path)
    assert message.subject == "Subject"
    assert message.body == "Body\n\n"


def test_a_newline_inside_the_subject_is_refused(tmp_path: Path) -> None:
    """A subject template producing two lines is an injection, not a subject."""
    make_set(tmp_path, "s", subject_txt="Line one\n{{ extra }}\n", body_txt="b")
    with pytest.raises(HeaderInjectionError) as caught:
        render(
            "s",
            to="a@example.test",
            context={"extra": "Bcc: x@example.test"},
            templates_dir=tmp_path,
        )
    assert caught.value.field == "subject"
    assert "rendering template 's'" in caught.value.__notes__[0]


def test_an_undefined_variable_is_an_error_naming_it(templates: Path) -> None:
    """A missing variable raises instead of rendering an empty string."""
    with pytest.raises(UndefinedVariableError) as caught:
        render("greet", to="a@example.test", context={}, templates_dir=templates)
    assert caught.value.variable == "name"
    assert caught.value.template == "greet/subject.txt"
    assert (
        str(caught.value)
        == "template 'greet': subject.txt uses undefined variable 'name'"
    )


def test_an_undefined_attribute_is_named_too(tmp_path: Path) -> None:
    """`{{ user.nmae }}` names the missing attribute."""
    make_set(tmp_path, "s", subject_txt="s", body_txt="{{ user.nmae }}")
    with pytest.raises(UndefinedVariableError) as caught:
        render(
            "s",
            to="a@example.test",
            context={"user": {"name": "Ann"}},
            templates_dir=tmp_path,
        )
    assert caught.value.variable == "nmae"


def test_default_filter_still_works_for_optional_values(tmp_path: Path) -> None:
    """Templates can opt into a fallback explicitly."""
    make_set(
        tmp_path, "s", subject_txt="Hi {{ name | default('there') }}", body_txt="b"
    )
    assert (
        render("s", to="a@example.test", templates_dir=tmp_path).subject == "Hi there"
    )


def test_includes_look_in_the_set_folder_before_the_templates_dir(
    tmp_path: Path,
) -> None:
    """An include resolves in the set's own folder first, then the root."""
    (tmp_path / "footer.txt").write_text("root footer", encoding="utf-8")
    (tmp_path / "shared.txt").write_text("root shared", encoding="utf-8")
    make_set(
        tmp_path,
        "s",
        subject_txt="s",
        body_txt='{% include "footer.txt" %}|{% include "shared.txt" %}',
        footer_txt="own footer",
    )
    assert (
        render("s", to="a@example.test", templates_dir=tmp_path).body
        == "own footer|root shared"
    )


def test_layouts_extend_from_the_templates_dir(tmp_path: Path) -> None:
    """`{% extends %}` finds a layout in the templates directory."""
    (tmp_path / "layout.html").write_text(
        "<main>{% block content %}{% endblock %}</main>", encoding="utf-8"
    )
    make_set(
        tmp_path,
        "s",
        subject_txt="s",
        body_txt="t",
        body_html='{% extends "layout.html" %}{% block content %}{{ x }}{% endblock %}',
    )
    assert (
        render(
            "s", to="a@example.test", context={"x": "<b>"}, templates_dir=tmp_path
        ).html
        == "<main>&lt;b&gt;</main>"
    )


def test_template_sets_are_compiled_once_per_process(templates: Path) -> None:
    """Loading a set twice returns the same compiled templates."""
    first = load_template_set("greet", templates)
    assert load_template_set("greet", templates) is first
    assert load_template_set("greet", str(templates)).subject is first.subject


def test_html_part_is_optional(tmp_path: Path) -> None:
    """Without body.html the message is text only."""
    make_set(tmp_path, "plain", subject_txt="s", body_txt="b")
    assert render("plain", to="a@example.test", templates_dir=tmp_path).html is None


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", ".hidden", ""])
def test_a_set_name_cannot_escape_the_templates_dir(templates: Path, name: str) -> None:
    """Path-like names are refused before touching the file system."""
    with pytest.raises(TemplateNotFoundError, match="not a template set name"):
        render(name, to="a@example.test", templates_dir=templates)


def test_an_unknown_set_lists_the_known_ones(templates: Path) -> None:
    """The error for a missing set says which sets exist."""
    with pytest.raises(TemplateNotFoundError, match=r"no folder .*\(known: greet\)"):
        render("welcome", to="a@example.test", templates_dir=templates)


def test_a_set_without_body_txt_is_incomplete(tmp_path: Path) -> None:
    """subject.txt and body.txt are both required."""
    make_set(tmp_path, "s", subject_txt="s")
    with pytest.raises(TemplateNotFoundError, match="missing body.txt"):
        render("s", to="a@example.test", templates_dir=tmp_path)


def test_a_syntax_error_reports_file_and_line(tmp_path: Path) -> None:
    """A template that does not parse fails at load, naming the file and line."""
    make_set(tmp_path, "s", subject_txt="s", body_txt="line one\n{% if %}\n")
    with pytest.raises(
        TemplateSyntaxError, match="syntax error in body.txt line 2"
    ) as caught:
        load_template_set("s", tmp_path)
    assert caught.value.line == 2


def test_a_missing_include_is_named(tmp_path: Path) -> None:
    """Including a file that does not exist names it."""
    make_set(tmp_path, "s", subject_txt="s", body_txt='{% include "nope.txt" %}')
    with pytest.raises(
        TemplateNotFoundError, match="includes missing template 'nope.txt'"
    ):
        render("s", to="a@example.test", templates_dir=tmp_path)


def test_templates_dir_defaults_to_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without templates_dir, MAILER_TEMPLATES_DIR is used."""
    make_set(tmp_path / "tpl", "s", subject_txt="from settings", body_txt="b")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(tmp_path / "tpl"))
    assert render("s", to="a@example.test").subject == "from settings"


def test_the_example_set_renders() -> None:
    """The shipped example renders with its layout, include and condition."""
    from tests.conftest import EXAMPLES

    message = render(
        "welcome",
        to="ann@example.test",
        context={"name": "Ann", "customer_id": "C-1", "plan": "pro"},
        templates_dir=EXAMPLES / "templates",
    )
    assert message.subject == "Welcome to Example Shop, Ann!"
    assert "Pro plan is active" in message.body
    assert message.html is not None
    assert "<title>Welcome, Ann</title>" in message.html
    assert "signed up at Example Shop" in message.html
