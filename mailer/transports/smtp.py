"""Deliver over SMTP with aiosmtplib, through a pool of reused connections."""

from __future__ import annotations

from mailer.message import Envelope
from mailer.results import Delivery
from mailer.settings import MailerSettings
from mailer.transports.base import BaseTransport
from mailer.transports.connection import SMTPConnection
from mailer.transports.errors import map_smtp_errors
from mailer.transports.pool import ConnectionPool, Transaction, limits_from_settings


class SMTPTransport(BaseTransport):
    """The real transport: up to ``MAILER_CONCURRENCY`` connections, each reused.

    Messages are queued to the pool's lanes; a server offering PIPELINING gets
    the envelope commands of a message in one write, chained behind the content
    of the message before it. A message whose envelope was cut short by a
    dropped connection (nothing delivered) is tried once more on a new one.
    """

    def __init__(self, settings: MailerSettings) -> None:
        self.settings = settings
        self.server = f"{settings.smtp_host}:{settings.port}"
        self.pool = ConnectionPool(
            lambda: SMTPConnection(settings),
            limits_from_settings(settings),
            timeout=settings.timeout,
        )

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Send one message on a pooled connection.

        Raises:
            DeliveryError: A subclass saying what failed; partial refusals are
                returned in ``Delivery.refused`` instead. Whether the failure
                came after the content was written (so the server may have
                accepted it) is the transaction's ``phase`` (``Phase.DATA``).
        """
        transaction = Transaction(envelope, content)
        with map_smtp_errors(self.server):
            return await self.pool.send(transaction)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.pool.aclose()
