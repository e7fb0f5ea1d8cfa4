"""Refuse a message over our own limits before any of it is sent.

``MAILER_MAX_RECIPIENTS`` and ``MAILER_MAX_MESSAGE_SIZE`` are checked when the
message is prepared, before any connection is opened. The server's own SIZE
(RFC 1870) is checked by the SMTP transport, before MAIL FROM.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailer.config.settings import MailerSettings
from mailer.content.attachments import Attachment
from mailer.content.message import Envelope
from mailer.exceptions import MessageError


def check_attachment_limits(
    attachments: Iterable[Attachment], settings: MailerSettings
) -> None:
    """Raise if the attachments alone make a message over MAILER_MAX_MESSAGE_SIZE.

    Checked before the message is built: the encoded size is computed from the
    sizes (a file is not read for it), so a 400 MB file is refused without
    reading it, encoding it and signing it first (2.4 GB of memory).

    Raises:
        MessageError: Over the limit (field ``size``).
    """
    total = sum(attachment.encoded_size() for attachment in attachments)
    if total > settings.max_message_size:
        raise MessageError(
            f"size: the attachments are {total:,} bytes once encoded, over "
            f"MAILER_MAX_MESSAGE_SIZE={settings.max_message_size:,}",
            field="size",
        )


def check_message_limits(
    envelope: Envelope, content: bytes, settings: MailerSettings
) -> None:
    """Raise if the message has too many recipients or is too large.

    Args:
        envelope: The message's envelope (every To, Cc and Bcc recipient).
        content: The encoded message, as it would be sent.
        settings: Where the limits come from.

    Raises:
        MessageError: Over ``MAILER_MAX_RECIPIENTS`` (field ``recipients``) or
            ``MAILER_MAX_MESSAGE_SIZE`` (field ``size``).
    """
    count = len(envelope.rcpt_tos)
    if count > settings.max_recipients:
        raise MessageError(
            f"recipients: {count} (to, cc and bcc together) exceed "
            f"MAILER_MAX_RECIPIENTS={settings.max_recipients}; split the message",
            field="recipients",
        )
    if len(content) > settings.max_message_size:
        raise MessageError(
            f"size: the message is {len(content):,} bytes once encoded, over "
            f"MAILER_MAX_MESSAGE_SIZE={settings.max_message_size:,}",
            field="size",
        )
