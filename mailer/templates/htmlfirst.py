"""Derive a text part from HTML (markdownify) and inline CSS (css-inline).

Both libraries are the ``html`` extra, imported only when a template set uses
them. markdownify writes Markdown, which reads well as plain text: links keep
their URL (``[Start here](https://...)``), headings and list items stay on
their own lines. (html2text does the same but is GPL, which an MIT project
cannot ship.)
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from types import ModuleType
from typing import Any

from mailer.exceptions import TemplateError

INSTALL_HINT = "pip install 'aiomailer[html]'"
# Elements whose text is not part of what a reader sees.
_HIDDEN = ("head", "style", "script", "template", "noscript")
_TABLE_PARTS = ["table", "thead", "tbody", "tfoot", "tr", "td", "th"]
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def _require(module: str, *, template: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TemplateError(
            f"template {template!r}: {what} needs the html extra: {INSTALL_HINT}",
            template=template,
        ) from None


@lru_cache(maxsize=1)
def _converter_class(markdownify: ModuleType) -> type[Any]:
    class TextConverter(markdownify.MarkdownConverter):  # type: ignore[misc,name-defined]
        """Markdown for a text/plain part: images become their alt text."""

        def convert_img(self, el: Any, text: str, parent_tags: Any) -> str:
            alt = el.attrs.get("alt") or ""
            return f"[{alt}]" if alt else ""

    return TextConverter


def html_to_text(html: str, *, template: str) -> str:
    """Return a readable text version of ``html`` (Markdown-flavoured).

    Raises:
        TemplateError: The ``html`` extra is not installed.
    """
    markdownify = _require(
        "markdownify", template=template, what="a text part derived from body.html"
    )
    bs4 = _require("bs4", template=template, what="a text part derived from body.html")
    soup = bs4.BeautifulSoup(html, "html.parser")
    for name in _HIDDEN:
        for element in soup.find_all(name):
            element.decompose()
    # HTML mail lays pages out with tables: read them as blocks of text (a
    # block per cell), not as Markdown tables of layout cells.
    for element in soup.find_all(_TABLE_PARTS):
        element.name = "div"
    converter = _converter_class(markdownify)(
        heading_style="ATX",
        bullets="-",
        escape_underscores=False,
        escape_asterisks=False,
    )
    text = converter.convert_soup(soup)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text).strip()
    return text + "\n" if text else ""


@lru_cache(maxsize=1)
def _inliner(css_inline: ModuleType) -> Any:
    # Never fetch a remote stylesheet while sending (nor let a template make
    # mailer do so); keep @media rules in a <style> element, where they work.
    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def inline_css(html: str, *, template: str) -> str:
    """Return ``html`` with its ``<style>`` rules moved into ``style=`` attributes.

    Raises:
        TemplateError: The ``html`` extra is missing, or the CSS cannot be
            inlined (the error names the template).
    """
    css_inline = _require("css_inline", template=template, what="inline_css")
    try:
        return str(_inliner(css_inline).inline(html))
    except ValueError as exc:
        raise TemplateError(
            f"template {template!r}: cannot inline CSS: {exc}", template=template
        ) from None
