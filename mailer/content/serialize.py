"""Assemble a Message into the exact bytes sent in DATA: headers, then the parts."""

from __future__ import annotations

import email.utils
import secrets
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from mailer.content import mime
from mailer.content.addresses import Address
from mailer.content.attachments import Attachment
from mailer.content.mime import CRLF

if TYPE_CHECKING:
    # Type-only: message.py calls this module to serialise itself.
    from mailer.content.message import Message


def new_message_id(sender: Address) -> str:
    """Return a fresh, globally unique Message-ID in the sender's domain.

    ``email.utils.make_msgid`` would call ``socket.getfqdn()``, which can block
    for seconds; the sender's domain is a better right-hand side anyway.
    """
    domain = sender.envelope.rpartition("@")[2]
    # 128 random bits, as uuid4 would give (less 6 fixed bits), without the
    # UUID object: a third of the time it took to make one.
    return f"<{secrets.token_hex(16)}@{domain}>"


def format_date(when: datetime | None = None) -> str:
    """Return an RFC 5322 date for ``when`` (default: now, in UTC)."""
    if when is None:
        return _date_of_second(int(time.time()))
    return email.utils.format_datetime(when)


@lru_cache(maxsize=2)
def _date_of_second(second: int) -> str:
    # A batch sends hundreds of messages a second, all with the same Date.
    return email.utils.format_datetime(datetime.fromtimestamp(second, UTC))


@lru_cache(maxsize=256)
def _shared_address_field(name: str, addresses: tuple[Address, ...]) -> str:
    # From and Reply-To repeat on every message of a batch: fold them once.
    return mime.fold(name, mime.address_tokens(addresses))


class Serialized(NamedTuple):
    """A serialised message: the Message-ID and Date it was given, and its bytes."""

    message_id: str
    date: str
    content: bytes


def serialize_message(
    message: Message,
    sender: Address,
    *,
    message_id: str | None = None,
    date: str | None = None,
) -> Serialized:
    """Return the message's Message-ID, Date and wire-ready bytes.

    This is the one place where a message gets its Message-ID and Date when
    none is given: a fresh ID in the sender's domain, and now.

    Args:
        message: The validated message.
        sender: The From address (the message's own sender or the default).
        message_id: Reuse this Message-ID (angle brackets included).
        date: Write this Date header value (a journal resume reuses it, so
            the bytes, and a DKIM signature over them, are the same).
    """
    message_id = message_id or new_message_id(sender)
    date = date or format_date()
    content = build_message(message, sender=sender, message_id=message_id, date=date)
    return Serialized(message_id, date, content)


def serialize(
    message: Message,
    sender: Address,
    *,
    message_id: str | None = None,
    date: str | None = None,
) -> tuple[str, bytes]:
    """Return the message's Message-ID and its wire-ready bytes.

    See ``serialize_message``, which also returns the Date it wrote.
    """
    serialized = serialize_message(message, sender, message_id=message_id, date=date)
    return serialized.message_id, serialized.content


def build_message(
    message: Message,
    *,
    sender: Address,
    message_id: str,
    date: str,
) -> bytes:
    """Return the message as wire-ready bytes (CRLF line ends, no Bcc header).

    Args:
        message: The validated message.
        sender: The From address (the message's own sender or the default).
        message_id: The Message-ID, with angle brackets.
        date: The Date header value.

    Returns:
        The message content to send after DATA, ending with CRLF.
    """
    fields: list[str] = [_shared_address_field("From", (sender,))]
    fields.append(mime.fold("To", mime.address_tokens(message.to)))
    if message.cc:
        fields.append(mime.fold("Cc", mime.address_tokens(message.cc)))
    if message.reply_to:
        fields.append(_shared_address_field("Reply-To", message.reply_to))
    fields.append(
        mime.fold("Subject", mime.unstructured_tokens(message.subject, name="Subject"))
    )
    fields.append(f"Date: {date}{CRLF}")
    fields.append(f"Message-ID: {message_id}{CRLF}")
    for name, value in message.headers:
        fields.append(mime.fold(name, mime.unstructured_tokens(value, name=name)))
    if message.unsubscribe is not None:
        for name, value in message.unsubscribe.headers():
            fields.append(mime.fold(name, value.split(" ")))
    fields.append(f"MIME-Version: 1.0{CRLF}")

    if message.html is None and not message.attachments:
        cte, body = mime.encode_text_body(message.body, final_newline_is_free=False)
        fields.append(f'Content-Type: text/plain; charset="utf-8"{CRLF}')
        fields.append(f"Content-Transfer-Encoding: {cte}{CRLF}")
        head = "".join(fields).encode("utf-8")
        # The body ends with CRLF; an empty body ends at the blank line itself.
        return head + b"\r\n" + body

    part_head, part_body = _body_tree(message, message_id)
    head = "".join(fields).encode("utf-8") + part_head
    return b"".join((head, b"\r\n", *part_body))


# A MIME part as pieces: its header bytes (each field ending with CRLF) and its
# body as a list of byte strings, joined only once, for the whole message.
Part = tuple[bytes, list[bytes]]


def _text_part(text: str, subtype: str) -> tuple[Part, bytes]:
    cte, body = mime.encode_text_body(text, final_newline_is_free=True)
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {cte}{CRLF}"
    ).encode("ascii")
    return (head, [body]), body


def _multipart(
    subtype: str, parts: list[Part], texts: list[bytes], seed: str, extra: str = ""
) -> Part:
    # Base64 never holds "=_": only the parts sent as they are (text, and an
    # attached message/rfc822) are searched.
    boundary = mime.new_boundary(*texts, seed=f"{seed}/{subtype}")
    head = (
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"{extra}{CRLF}'
    ).encode("ascii")
    delimiter = f"--{boundary}".encode("ascii")
    body: list[bytes] = []
    for part_head, part_body in parts:
        body += [delimiter, b"\r\n", part_head, b"\r\n", *part_body, b"\r\n"]
    body += [delimiter, b"--\r\n"]
    return head, body


def _attachment_part(attachment: Attachment) -> Part:
    # Built once per attachment object and shared by every message carrying it.
    head, body = attachment.mime_part()
    return head, [body]


def _body_tree(message: Message, message_id: str) -> Part:
    """Return the smallest correct MIME tree for the message's body and files.

    multipart/mixed holds the attachments after the body; multipart/related
    holds inline parts (with a Content-ID) after the text or alternative part
    they belong to; multipart/alternative holds text then HTML. Each level is
    there only when needed.
    """
    text_part, text = _text_part(message.body, "plain")
    texts = [text]
    body = text_part
    if message.html is not None:
        html_part, html = _text_part(message.html, "html")
        texts.append(html)
        body = _multipart("alternative", [text_part, html_part], texts, message_id)
    inline = [a for a in message.attachments if _is_related(a)]
    files = [a for a in message.attachments if not _is_related(a)]
    texts += [a.mime_part()[1] for a in message.attachments if not a.is_encoded]
    if inline:
        root = "multipart/alternative" if message.html is not None else "text/plain"
        body = _multipart(
            "related",
            [body, *(_attachment_part(a) for a in inline)],
            texts,
            message_id,
            extra=f'; type="{root}"',
        )
    if files:
        body = _multipart(
            "mixed", [body, *(_attachment_part(a) for a in files)], texts, message_id
        )
    return body


def _is_related(attachment: Attachment) -> bool:
    return attachment.disposition == "inline" and attachment.content_id is not None
