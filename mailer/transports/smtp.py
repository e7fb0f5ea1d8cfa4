"""Deliver over SMTP with aiosmtplib, through a pool of reused connections."""

from __future__ import annotations

import aiosmtplib

from mailer.message import Envelope
from mailer.results import Delivery
from mailer.settings import MailerSettings
from mailer.transports.base import BaseTransport
from mailer.transports.connection import Phase, SMTPConnection
from mailer.transports.errors import map_smtp_errors
from mailer.transports.pool import ConnectionPool


class SMTPTransport(BaseTransport):
    """The real transport: up to ``MAILER_CONCURRENCY`` connections, each reused."""

    def __init__(self, settings: MailerSettings) -> None:
        self.settings = settings
        self.server = f"{settings.smtp_host}:{settings.port}"
        self._pool = ConnectionPool(
            lambda: SMTPConnection(settings), size=settings.concurrency
        )

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Send one message on a pooled connection.

        Raises:
            DeliveryError: A subclass saying what failed; partial refusals are
                returned in ``Delivery.refused`` instead.
        """
        with map_smtp_errors(self.server):
            used: SMTPConnection | None = None
            try:
                async with self._pool.connection() as connection:
                    used = connection
                    return await connection.send(envelope, content)
            except aiosmtplib.SMTPServerDisconnected:
                # A reused connection the server had dropped while idle fails on
                # MAIL FROM. Nothing was delivered: try once on a new connection.
                stale = (
                    used is not None
                    and used.messages_sent > 0
                    and used.phase is Phase.ENVELOPE
                )
                if not stale:
                    raise
            async with self._pool.connection(fresh=True) as connection:
                return await connection.send(envelope, content)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._pool.aclose()
