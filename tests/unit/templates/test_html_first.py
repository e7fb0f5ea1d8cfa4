"""HTML-first template sets: derived text, CSS inlining, inline() images, locales."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailer import Message, TemplateError, TemplateNotFoundError, render
from mailer.content.addresses import Address
from mailer.records import SentMail

SENDER = Address.parse("shop@example.test", field="sender")


def write(root: Path, path: str, content: str | bytes) -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    return target


@pytest.fixture
def root(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    write(templates, "news/subject.txt", "News for {{ name }}\n")
    write(
        templates,
        "news/body.html",
        "<html><head><title>Ignored</title><style>p { color: red }</style></head>"
        '<body><h1>Hello {{ name }}</h1><p>Read <a href="https://shop.example.test/n">'
        "the news</a>.</p><ul><li>one</li><li>two</li></ul>"
        "<table><tr><td><p>cell text</p></td></tr></table></body></html>",
    )
    return templates


def sent(message: Message) -> SentMail:
    return SentMail(envelope=message.envelope(SENDER), raw=message.to_bytes(SENDER))


def test_text_is_derived_from_html_when_body_txt_is_missing(root: Path) -> None:
    """No body.txt: the text keeps the link's URL, headings and list items readable."""
    message = render(
        "news", to="a@example.test", context={"name": "Ann"}, templates_dir=root
    )
    assert message.body == (
        "# Hello Ann\n\nRead [the news](https://shop.example.test/n).\n\n- one\n- two\n\ncell text\n"
    )
    assert "Ignored" not in message.body  # <head> is not shown text
    assert "color" not in message.body


def test_body_txt_wins_when_both_exist(root: Path) -> None:
    """A hand-written body.txt is used as it is."""
    write(root, "news/body.txt", "Plain {{ name }}\n")
    message = render(
        "news", to="a@example.test", context={"name": "Ann"}, templates_dir=root
    )
    assert message.body == "Plain Ann\n"


def test_a_set_without_any_body_is_refused(root: Path) -> None:
    """subject.txt alone: the error names both files it could use."""
    write(root, "empty/subject.txt", "s\n")
    with pytest.raises(
        TemplateNotFoundError, match=r"missing body\.txt \(or body\.html"
    ):
        render("empty", to="a@example.test", templates_dir=root)


def test_css_is_inlined_only_for_sets_that_ask(root: Path) -> None:
    """template.toml `inline_css = true` moves <style> rules into style=."""
    plain = render(
        "news", to="a@example.test", context={"name": "A"}, templates_dir=root
    )
    assert plain.html is not None
    assert "<style>" in plain.html
    assert 'style="color: red;"' not in plain.html
    write(root, "styled/subject.txt", "s\n")
    write(root, "styled/body.html", (root / "news/body.html").read_text())
    write(root, "styled/template.toml", "inline_css = true\n")
    styled = render(
        "styled", to="a@example.test", context={"name": "A"}, templates_dir=root
    )
    assert styled.html is not None
    assert '<p style="color: red;">' in styled.html
    assert "<style>" not in styled.html


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ("inline_css = 1\n", r"template\.toml: inline_css must be true or false"),
        (
            "inline_ccs = true\n",
            r"template\.toml: unknown key 'inline_ccs' \(known: inline_css\)",
        ),
        ("inline_css = \n", r"template\.toml is not valid TOML"),
    ],
)
def test_a_bad_template_toml_names_the_problem(
    root: Path, toml: str, error: str
) -> None:
    """A typo in template.toml is an error naming the file and the key."""
    write(root, "news/template.toml", toml)
    with pytest.raises(TemplateError, match=error):
        render("news", to="a@example.test", context={"name": "A"}, templates_dir=root)


def test_inline_attaches_the_image_and_returns_its_cid(root: Path) -> None:
    """inline("logo.png") gives a cid: URL and an inline part with that Content-ID."""
    logo = os.urandom(500)
    write(root, "promo/logo.png", logo)
    write(root, "shared.png", b"shared image")
    write(root, "promo/subject.txt", "s\n")
    write(root, "promo/body.txt", "t\n")
    write(
        root,
        "promo/body.html",
        '<img src="{{ inline("logo.png") }}"><img src="{{ inline("logo.png") }}">'
        '<img src="{{ inline("shared.png") }}">',
    )
    message = render("promo", to="a@example.test", templates_dir=root)
    logo_part, shared = message.attachments
    assert (logo_part.filename, logo_part.disposition, logo_part.read()) == (
        "logo.png",
        "inline",
        logo,
    )
    assert shared.read() == b"shared image"  # found in the templates directory
    assert message.html == (
        f'<img src="cid:{logo_part.content_id}"><img src="cid:{logo_part.content_id}">'
        f'<img src="cid:{shared.content_id}">'
    )
    mail = sent(message)
    assert [a.content_id for a in mail.attachments] == [
        logo_part.content_id,
        shared.content_id,
    ]


def test_inline_images_are_one_object_per_process(root: Path) -> None:
    """Rendering twice reuses the same Attachment, so it is encoded once."""
    write(root, "promo/logo.png", b"png")
    write(root, "promo/subject.txt", "s\n")
    write(root, "promo/body.html", '<img src="{{ inline("logo.png") }}">')
    first = render("promo", to="a@example.test", templates_dir=root)
    second = render("promo", to="b@example.test", templates_dir=root)
    assert first.attachments[0] is second.attachments[0]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("../../secret.txt", "must stay inside the template folder"),
        ("/etc/passwd", "must stay inside the template folder"),
        ("missing.png", "no such file in"),
        ("link.png", "points outside the templates directory"),
    ],
)
def test_inline_never_reads_outside_the_templates_directory(
    root: Path, tmp_path: Path, name: str, error: str
) -> None:
    """.., absolute paths and symlinks pointing out are refused, naming body.html."""
    write(tmp_path, "secret.txt", "secret")
    (root / "news").mkdir(exist_ok=True)
    (root / "news/link.png").symlink_to(tmp_path / "secret.txt")
    write(root, "news/body.html", f'<img src="{{{{ inline("{name}") }}}}">')
    with pytest.raises(
        TemplateError, match=rf"^template 'news': body\.html: inline\(.*{error}"
    ):
        render("news", to="a@example.test", context={"name": "A"}, templates_dir=root)


def test_a_locale_folder_is_used_with_fallbacks(root: Path) -> None:
    """locale='de-AT' uses news/de/ (language fallback); 'fr' falls back to news/."""
    write(root, "news/de/subject.txt", "Nachrichten für {{ name }}\n")
    write(root, "news/de/body.html", "<p>Hallo {{ name }}</p>")
    german = render(
        "news",
        to="a@example.test",
        context={"name": "Ann"},
        templates_dir=root,
        locale="de-AT",
    )
    assert (german.subject, german.body) == ("Nachrichten für Ann", "Hallo Ann\n")
    french = render(
        "news",
        to="a@example.test",
        context={"name": "Ann"},
        templates_dir=root,
        locale="fr",
    )
    assert french.subject == "News for Ann"


def test_a_malformed_locale_is_refused(root: Path) -> None:
    """A locale that could be a path is refused, not looked up."""
    with pytest.raises(TemplateError, match=r"locale '\.\./x' is not a locale"):
        render(
            "news",
            to="a@example.test",
            context={"name": "A"},
            templates_dir=root,
            locale="../x",
        )
