"""Deliver over SMTP with aiosmtplib, through a pool of reused connections."""

from __future__ import annotations

import asyncio

from mailer.exceptions import DeliveryError
from mailer.message import Envelope
from mailer.results import Delivery
from mailer.settings import MailerSettings
from mailer.transports.base import BaseTransport
from mailer.transports.connection import Phase, SMTPConnection
from mailer.transports.errors import map_smtp_errors
from mailer.transports.pool import ConnectionPool


class SMTPTransport(BaseTransport):
    """The real transport: up to ``MAILER_CONCURRENCY`` connections, each reused.

    Each call is one attempt: it does not retry. A failed transaction closes its
    connection (it may be out of step with the server); retrying, on a fresh
    one, is the client's job (``mailer.retry``), so that every attempt is
    counted and spaced by the backoff. A connection the server dropped while it
    sat idle in the pool is noticed before it is lent out and replaced.
    """

    def __init__(self, settings: MailerSettings) -> None:
        self.settings = settings
        self.server = f"{settings.smtp_host}:{settings.port}"
        self._pool = ConnectionPool(
            lambda: SMTPConnection(settings), size=settings.concurrency
        )

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Send one message on a pooled connection, within ``MAILER_MESSAGE_TIMEOUT``.

        Raises:
            DeliveryError: A subclass saying what failed; partial refusals are
                returned in ``Delivery.refused`` instead. ``ambiguous`` is set
                when the failure came after DATA began and without a reply:
                the server may have accepted the message.
        """
        used: SMTPConnection | None = None
        try:
            with map_smtp_errors(self.server):
                async with self._pool.connection() as connection:
                    used = connection
                    async with asyncio.timeout(self.settings.message_timeout):
                        return await connection.send(envelope, content)
        except DeliveryError as exc:
            if used is not None and used.phase is Phase.DATA and exc.reply is None:
                exc.ambiguous = True
            raise

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._pool.aclose()
