"""Refuse a message larger than the server's SIZE (RFC 1870) before MAIL FROM.

A message the server would refuse after a long upload is never uploaded.
"""

from __future__ import annotations

import aiosmtplib

from mailer.exceptions import UnsupportedError


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
