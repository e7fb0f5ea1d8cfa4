"""Turn a stored message into what the page and the API show: parts, facts, checks.

Also prepares a message's HTML for its sandboxed frame: ``cid:`` references
point at the inbox's own URL for that part, links open outside the frame, and
``<meta http-equiv>`` (a refresh could fetch a remote page) is neutralised.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any
from urllib.parse import quote

from mailer.inbox.checks import Finding, Report, check_mail
from mailer.inbox.parts import body_parts, other_parts
from mailer.inbox.summary import StoredMail
from mailer.records import (
    SentMail,
    as_utf8,
    header_items,
    header_text,
    read_headers,
    unreadable,
)

# The policy of a message's HTML document. "sandbox" without allow-scripts:
# no script runs even if the document is opened on its own, outside the page's
# iframe; no form is sent; no plugin loads. Only inline styles and images from
# the inbox itself (inline parts) or data: URLs load, unless remote images were
# allowed for this message.
_BODY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'{remote_styles}; "
    "img-src data: {origin}{remote_images}; font-src data:; media-src 'none'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox"
)
_CID = re.compile(r"""(?i)\bcid:([^"'\s)>]+)""")
_META_EQUIV = re.compile(r"(?i)<meta\b[^>]*\bhttp-equiv\b[^>]*>")
# Opened from the frame, a link gets a new tab (the frame may open pop-ups).
_BASE = '<base target="_blank">'


def body_policy(origin: str, *, remote: bool) -> str:
    """Return the Content-Security-Policy of a message's HTML document.

    Args:
        origin: The inbox's own origin (``http://127.0.0.1:8025``).
        remote: Allow images (and stylesheets' images) from the network.
    """
    return _BODY_POLICY.format(
        origin=origin,
        remote_images=" https: http:" if remote else "",
        remote_styles="",
    )


def prepare_html(html: str, *, cid_url: str) -> str:
    """Return the HTML to put in the frame.

    Args:
        html: The message's HTML part.
        cid_url: The URL prefix of inline parts; the Content-ID is appended.
    """
    html = _META_EQUIV.sub("", html)
    html = _CID.sub(lambda m: cid_url + quote(m.group(1), safe="@._-"), html)
    return _BASE + html


def message_detail(stored: StoredMail, mail: SentMail) -> dict[str, Any]:
    """Return everything known about one message, JSON-ready.

    The summary fields, every header, both bodies, the envelope (with the
    Bcc recipients named), the session, the attachments and the checks. A
    message the standard library cannot parse gets its headers, its envelope
    and a ``problem`` saying why the rest is missing (its source is kept).
    """
    try:
        return _detail(stored, mail)
    except Exception as exc:  # noqa: BLE001 - a hostile message still shows
        return _header_detail(stored, mail, unreadable(exc))


def _header_detail(stored: StoredMail, mail: SentMail, problem: str) -> dict[str, Any]:
    message = read_headers(mail.raw)
    detail = stored.to_json()
    detail.pop("search_text", None)
    detail.update(
        {
            "message_id": header_text(message, "message-id") or None,
            "headers": [
                [name, as_utf8(str(value))] for name, _, value in header_items(message)
            ],
            "text": None,
            "html": None,
            "envelope": {
                "mail_from": mail.envelope.mail_from,
                "rcpt_tos": list(mail.envelope.rcpt_tos),
                "bcc": list(stored.bcc),
            },
            "attachments": [],
            "checks": Report(
                has_text=False,
                has_html=False,
                findings=[Finding("warning", f"this message {problem}")],
            ).to_json(),
            "parts": {"text": False, "html": False},
            "problem": f"This message {problem}; its source is kept (Source tab).",
        }
    )
    return detail


def _detail(stored: StoredMail, mail: SentMail) -> dict[str, Any]:
    message = mail.message
    text_part, html_part = body_parts(message)
    detail = stored.to_json()
    detail.pop("search_text", None)
    detail.update(
        {
            "message_id": mail.message_id,
            "headers": [[name, value] for name, value in mail.headers],
            "text": mail.text,
            "html": mail.html,
            "envelope": {
                "mail_from": mail.envelope.mail_from,
                "rcpt_tos": list(mail.envelope.rcpt_tos),
                "bcc": list(mail.bcc),
            },
            "attachments": [asdict(part) for part in other_parts(message)],
            "checks": check_mail(mail).to_json(),
            "parts": {
                "text": text_part is not None,
                "html": html_part is not None,
            },
            "problem": None,
        }
    )
    return detail
