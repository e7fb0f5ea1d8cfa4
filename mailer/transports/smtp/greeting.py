"""Greet an SMTP server: EHLO, or HELO when the server does not know EHLO.

A server without the service extensions (Postfix's ``smtp-sink -e``, old
appliances) answers EHLO with 500 or 502. The client then greets with HELO, as
smtplib and aiosmtplib do (RFC 5321 3.2): the session goes on without any
extension, so without PIPELINING, SIZE, SMTPUTF8, STARTTLS or AUTH.
"""

from __future__ import annotations

import aiosmtplib

from mailer.exceptions import ConnectError
from mailer.replies import Reply, calls_for_helo


async def greet(smtp: aiosmtplib.SMTP, *, server: str) -> None:
    """Send EHLO, and HELO if the server refuses EHLO with a 5xx.

    Args:
        smtp: A connected client that has not greeted yet in this session.
        server: ``host:port``, for the messages.

    Raises:
        ConnectError: The server refused EHLO with a 4xx, or refused both EHLO
            and HELO; the reply is attached.
        aiosmtplib.SMTPException: The connection failed (mapped by the caller).
    """
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError as exc:
        refused = Reply(exc.code, exc.message)
        if not calls_for_helo(refused) or not smtp.is_connected:
            raise ConnectError(
                f"{server} refused EHLO: {refused}",
                reply=refused,
                transient=not 500 <= refused.code < 600,
            ) from exc
    else:
        return
    try:
        await smtp.helo()
    except aiosmtplib.SMTPResponseException as exc:
        reply = Reply(exc.code, exc.message)
        raise ConnectError(
            f"{server} refused both EHLO ({refused}) and HELO ({reply})",
            reply=reply,
            transient=not 500 <= reply.code < 600,
        ) from exc


def greeted_with_helo(smtp: aiosmtplib.SMTP) -> bool:
    """Return whether this session greeted with HELO (so it has no extensions)."""
    return smtp.last_helo_response is not None and smtp.last_ehlo_response is None
