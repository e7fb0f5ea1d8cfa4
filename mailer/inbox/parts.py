"""Find a message's parts: the bodies, the attachments and the inline images.

Each leaf part gets a number, its position in a depth-first walk of the MIME
tree, so a URL can name it; inline images are also found by Content-ID.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import cast

from mailer import records


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One leaf part that is not a body: an attachment or an inline image.

    Attributes:
        index: Its number (position among the message's leaf parts).
        filename: Its file name, if any.
        content_type: Its MIME type.
        size: Its decoded size in bytes.
        content_id: Its Content-ID without angle brackets, if any.
        inline: Shown inside the body rather than offered as a file.
    """

    index: int
    filename: str | None
    content_type: str
    size: int
    content_id: str | None
    inline: bool


def leaf_parts(message: EmailMessage) -> Iterator[tuple[int, EmailMessage]]:
    """Yield ``(index, part)`` for every part that is not a container.

    An attached message (``message/rfc822``) is one part, downloadable whole.
    """
    yield from enumerate(records.leaf_parts(message))


def body_parts(
    message: EmailMessage,
) -> tuple[EmailMessage | None, EmailMessage | None]:
    """Return the text/plain and text/html bodies a mail client would show."""
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return (
        cast(EmailMessage, text) if text is not None else None,
        cast(EmailMessage, html) if html is not None else None,
    )


def part_content(part: EmailMessage) -> bytes:
    """Return a part's decoded bytes (empty when it has none)."""
    return records.part_bytes(part)


def content_id(part: EmailMessage) -> str | None:
    """Return a part's Content-ID without its angle brackets."""
    value = records.header_value(part, "content-id")
    if value is None:
        return None
    return str(value).strip().removeprefix("<").removesuffix(">").strip() or None


def other_parts(message: EmailMessage) -> list[PartInfo]:
    """Return every leaf part but the two bodies, in order."""
    bodies = {id(part) for part in body_parts(message) if part is not None}
    found = []
    for index, part in leaf_parts(message):
        if id(part) in bodies:
            continue
        disposition = records.part_disposition(part)
        identifier = content_id(part)
        found.append(
            PartInfo(
                index=index,
                filename=records.part_filename(part),
                content_type=part.get_content_type(),
                size=len(part_content(part)),
                content_id=identifier,
                inline=disposition != "attachment" and identifier is not None,
            )
        )
    return found


def find_part(message: EmailMessage, index: int) -> EmailMessage | None:
    """Return the leaf part numbered ``index``, if there is one."""
    for number, part in leaf_parts(message):
        if number == index:
            return part
    return None


def find_by_content_id(message: EmailMessage, wanted: str) -> EmailMessage | None:
    """Return the part whose Content-ID is ``wanted`` (brackets optional)."""
    wanted = wanted.strip().removeprefix("<").removesuffix(">")
    for _, part in leaf_parts(message):
        if content_id(part) == wanted:
            return part
    return None
