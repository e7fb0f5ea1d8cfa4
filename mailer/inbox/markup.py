"""Read what the inbox needs from a message's HTML: its text, images and links.

The standard library's tolerant parser is enough: nothing here renders or
sanitises HTML (the browser shows it in a sandboxed frame); it only reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

# Content of these elements is never visible text.
_INVISIBLE = frozenset({"script", "style", "head", "title", "template"})
_SPACES = re.compile(r"\s+")
# Elements that start a new line of text.
_BLOCKS = frozenset(
    {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table", "ul", "ol"}
)


@dataclass(frozen=True, slots=True)
class Image:
    """One ``<img>``: where it comes from and its alt text (None: no attribute)."""

    src: str
    alt: str | None


@dataclass(frozen=True, slots=True)
class Link:
    """One ``<a href>``: the target and the text shown for it."""

    href: str
    text: str


@dataclass
class Markup:
    """What was read from one HTML document."""

    text: str = ""
    images: list[Image] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.images: list[Image] = []
        self.links: list[Link] = []
        self._hidden = 0
        self._link: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in _INVISIBLE:
            self._hidden += 1
        elif tag == "img":
            self.images.append(
                Image(src=values.get("src") or "", alt=values.get("alt"))
            )
        elif tag == "a" and values.get("href"):
            self._link = (values.get("href") or "", [])
        elif tag in _BLOCKS:
            self.pieces.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <img/> and <br/>: a start tag with nothing to close.
        if tag not in _INVISIBLE:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self.pieces.append("\n")
        if tag in _INVISIBLE:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "a" and self._link is not None:
            href, words = self._link
            self.links.append(
                Link(href=href, text=_SPACES.sub(" ", "".join(words)).strip())
            )
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self.pieces.append(data)
        if self._link is not None:
            self._link[1].append(data)


def read_markup(html: str) -> Markup:
    """Return the visible text, the images and the links of an HTML document."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    if reader._link is not None:  # an <a> never closed still counts
        reader.handle_endtag("a")
    lines = (
        _SPACES.sub(" ", line).strip() for line in "".join(reader.pieces).split("\n")
    )
    text = "\n".join(line for line in lines if line)
    return Markup(text=text, images=reader.images, links=reader.links)
