"""Turn a Message into JSON for the queue database and back, field by field.

A queued message is stored as it was given (validated, with its sender
resolved), so a worker on another host sends exactly what was enqueued, with
no template or ``MAILER_FROM`` of its own. Decoding validates again: a row
edited by hand cannot smuggle a header injection past ``Message``.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from mailer.content.addresses import Address
from mailer.content.attachments import Attachment
from mailer.content.message import Message
from mailer.content.unsubscribe import Unsubscribe

# The Message fields this codec writes. A field added to Message must be added
# here too (a unit test compares the two), or queued mail would lose it.
FIELDS = (
    "to",
    "subject",
    "body",
    "html",
    "cc",
    "bcc",
    "reply_to",
    "sender",
    "headers",
    "attachments",
    "unsubscribe",
)
CODEC_VERSION = 1


def _address(address: Address) -> list[str]:
    return [address.display_name, address.addr_spec]


def _addresses(addresses: tuple[Address, ...]) -> list[list[str]]:
    return [_address(address) for address in addresses]


def _attachment(attachment: Attachment) -> dict[str, Any]:
    # The bytes themselves: a worker on another host has no access to the path.
    return {
        "content": base64.b64encode(attachment.read()).decode("ascii"),
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "disposition": attachment.disposition,
        "content_id": attachment.content_id,
    }


def _decode_attachment(data: dict[str, Any]) -> Attachment:
    return Attachment(
        base64.b64decode(data["content"], validate=True),
        filename=data["filename"],
        content_type=data["content_type"],
        disposition=data["disposition"],
        content_id=data["content_id"],
    )


def encode_message(message: Message, *, sender: Address) -> dict[str, Any]:
    """Return ``message`` as a JSON-ready dict, its sender set to ``sender``.

    Args:
        message: The validated message.
        sender: Its own sender, or the default one: stored so that the worker
            needs no ``MAILER_FROM``.

    Raises:
        MessageError: An attachment's file cannot be read.
    """
    unsubscribe = message.unsubscribe
    return {
        "v": CODEC_VERSION,
        "to": _addresses(message.to),
        "subject": message.subject,
        "body": message.body,
        "html": message.html,
        "cc": _addresses(message.cc),
        "bcc": _addresses(message.bcc),
        "reply_to": _addresses(message.reply_to),
        "sender": _address(message.sender or sender),
        "headers": [list(pair) for pair in message.headers],
        "attachments": [_attachment(a) for a in message.attachments],
        "unsubscribe": (
            None
            if unsubscribe is None
            else {"url": unsubscribe.url, "mailto": unsubscribe.mailto}
        ),
    }


def _decode_addresses(items: list[list[str]], field: str) -> list[Address]:
    return [
        Address.create(addr_spec, name, field=f"{field}[{index}]")
        for index, (name, addr_spec) in enumerate(items)
    ]


def decode_message(data: dict[str, Any]) -> Message:
    """Return the Message a dict from ``encode_message`` describes.

    Raises:
        MessageError: A field does not validate (a row edited by hand).
        ValueError: The dict is from another codec version.
    """
    if data.get("v") != CODEC_VERSION:
        raise ValueError(f"queued message format {data.get('v')!r} is not known")
    name, addr_spec = data["sender"]
    unsubscribe = data.get("unsubscribe")
    return Message(
        to=_decode_addresses(data["to"], "to"),
        subject=data["subject"],
        body=data["body"],
        html=data["html"],
        cc=_decode_addresses(data["cc"], "cc"),
        bcc=_decode_addresses(data["bcc"], "bcc"),
        reply_to=_decode_addresses(data["reply_to"], "reply_to"),
        sender=Address.create(addr_spec, name, field="sender"),
        headers=[(header, value) for header, value in data["headers"]],
        attachments=[_decode_attachment(a) for a in data.get("attachments", [])],
        unsubscribe=(
            None
            if unsubscribe is None
            else Unsubscribe(url=unsubscribe["url"], mailto=unsubscribe["mailto"])
        ),
    )


def message_fields() -> tuple[str, ...]:
    """Return the names of Message's fields (what the codec must cover)."""
    return tuple(field.name for field in dataclasses.fields(Message))
