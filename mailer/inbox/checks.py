"""Check a received message the way a careful reviewer would before it goes out.

Images without alt text (screen readers and blocked images show nothing), the
HTML's size against Gmail's clipping limit (past about 102 KB Gmail hides the
rest behind "View entire message"), every link, remote images, and a missing
text part (some clients and spam filters penalise HTML-only mail).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mailer.inbox.markup import Image, Link, read_markup
from mailer.records import SentMail

# Gmail clips a message whose HTML is larger than about 102 KB.
GMAIL_CLIP_BYTES = 102 * 1024
_SAFE_LINK_SCHEMES = frozenset({"http", "https", "mailto", "tel"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: how bad (``"warning"`` or ``"info"``) and what it is."""

    level: str
    message: str


@dataclass
class Report:
    """What the checks found in one message.

    Attributes:
        html_bytes: The size of the HTML part, encoded as UTF-8.
        clip_limit: Gmail's clipping size, for comparison.
        has_text: Whether there is a text/plain part.
        has_html: Whether there is a text/html part.
        images_without_alt: The ``src`` of each ``<img>`` lacking ``alt``.
        remote_images: The ``src`` of each image loaded from the network.
        links: Every link, in order, with its text.
        findings: The problems, most serious first.
    """

    html_bytes: int = 0
    clip_limit: int = GMAIL_CLIP_BYTES
    has_text: bool = False
    has_html: bool = False
    images_without_alt: list[str] = field(default_factory=list)
    remote_images: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready values."""
        return asdict(self)


def is_remote(src: str) -> bool:
    """Return whether an image source is fetched from the network."""
    scheme = urlsplit(src.strip()).scheme.lower()
    return scheme in ("http", "https") or src.strip().startswith("//")


def check_mail(mail: SentMail) -> Report:
    """Run every check on a message."""
    html = mail.html
    text = mail.text
    report = Report(has_text=text is not None, has_html=html is not None)
    if html is None:
        if text is None:
            report.findings.append(Finding("warning", "the message has no body"))
        return report
    report.html_bytes = len(html.encode("utf-8"))
    markup = read_markup(html)
    report.links = markup.links
    report.images_without_alt = [i.src for i in markup.images if i.alt is None]
    report.remote_images = [i.src for i in markup.images if is_remote(i.src)]
    report.findings = _findings(report, markup.images)
    return report


def _findings(report: Report, images: list[Image]) -> list[Finding]:
    findings = []
    share = report.html_bytes / report.clip_limit
    if report.html_bytes > report.clip_limit:
        findings.append(
            Finding(
                "warning",
                f"the HTML is {report.html_bytes:,} bytes: Gmail clips messages "
                f"over {report.clip_limit:,} bytes",
            )
        )
    elif share > 0.8:
        findings.append(
            Finding(
                "info",
                f"the HTML is {report.html_bytes:,} bytes, {share:.0%} of Gmail's "
                "clipping limit",
            )
        )
    if not report.has_text:
        findings.append(
            Finding("warning", "no text/plain part: add one for text-only readers")
        )
    if report.images_without_alt:
        count = len(report.images_without_alt)
        findings.append(
            Finding("warning", f"{count} of {len(images)} image(s) without alt text")
        )
    for link in report.links:
        scheme = urlsplit(link.href.strip()).scheme.lower()
        if scheme and scheme not in _SAFE_LINK_SCHEMES:
            findings.append(
                Finding("warning", f"link with the {scheme}: scheme: {link.href[:80]}")
            )
    if report.remote_images:
        findings.append(
            Finding(
                "info",
                f"{len(report.remote_images)} remote image(s): many clients block "
                "them until the reader allows it",
            )
        )
    return findings
