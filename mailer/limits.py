"""Refuse a message over a limit before any of it is sent.

Two limits are ours (``MAILER_MAX_RECIPIENTS``, ``MAILER_MAX_MESSAGE_SIZE``) and
are checked when the message is prepared; one is the server's (the SIZE it
advertises in EHLO, RFC 1870) and is checked before MAIL FROM, so a message
the server would refuse after a long upload is never uploaded.
"""

from __future__ import annotations

import aiosmtplib

from mailer.exceptions import MessageError, UnsupportedError
from mailer.message import Envelope
from mailer.settings import MailerSettings


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


def server_size_limit(smtp: aiosmtplib.SMTP) -> int | None:
    """Return the SIZE the server advertised, or None if it set no limit."""
    if not smtp.supports_extension("size"):
        return None
    value = smtp.esmtp_extensions.get("size", "").strip()
    # "SIZE" alone or "SIZE 0" means the server declares no fixed limit.
    return int(value) if value.isdigit() and int(value) > 0 else None


def check_server_size(smtp: aiosmtplib.SMTP, content: bytes, *, server: str) -> None:
    """Raise if the message is larger than the server's SIZE.

    Raises:
        UnsupportedError: The server would refuse a message this large.
    """
    limit = server_size_limit(smtp)
    if limit is not None and len(content) > limit:
        raise UnsupportedError(
            f"{server} accepts messages of at most {limit:,} bytes (SIZE); this "
            f"one is {len(content):,}; nothing was sent"
        )
