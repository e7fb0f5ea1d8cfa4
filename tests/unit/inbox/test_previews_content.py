"""Previews of HTML-first sets: the derived text and inline() images, as when sending."""

from __future__ import annotations

from pathlib import Path

from mailer.inbox.previews import render_preview


def test_an_html_first_set_with_an_inline_image_previews(tmp_path: Path) -> None:
    """No body.txt and an inline() image: the preview shows derived text and a cid: URL."""
    folder = tmp_path / "templates" / "news"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("News\n")
    (folder / "body.html").write_text(
        '<h1>Hello</h1><img src="{{ inline("logo.png") }}" alt="Logo">'
    )
    (folder / "logo.png").write_bytes(b"png")
    preview = render_preview(tmp_path / "templates", "news")
    assert preview.problem is None
    assert preview.text == "# Hello\n\n[Logo]\n"
    assert preview.html is not None
    assert 'src="cid:logo.' in preview.html
