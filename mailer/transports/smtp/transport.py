"""Deliver over SMTP with aiosmtplib, through a pool of reused connections."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from mailer.config.settings import MailerSettings
from mailer.content.message import Envelope
from mailer.exceptions import DeliveryError, RecipientsRefusedError
from mailer.replies import Reply, is_rate_refusal
from mailer.transports.base import BaseTransport, Delivery, DeliveryProgress
from mailer.transports.ratelimit import LocalRateLimiter, RateLimiter
from mailer.transports.smtp.connection import Phase, SMTPConnection
from mailer.transports.smtp.errors import map_smtp_errors
from mailer.transports.smtp.pool import (
    ConnectionPool,
    Transaction,
    limits_from_settings,
)


class SMTPTransport(BaseTransport):
    """The real transport: up to ``MAILER_CONCURRENCY`` connections, each reused.

    Messages are queued to the pool's lanes; a server offering PIPELINING gets
    the envelope commands of a message in one write, chained behind the content
    of the message before it. Each call is one attempt: it does not retry. A
    refused transaction leaves its connection in step, and it is reused; one
    that failed otherwise (a timeout, a lost or malformed reply) closes its
    connection. Retrying is the client's job (``mailer.delivery.retry``), so
    that every attempt is counted and spaced by the backoff.

    Each transaction starts only when the relay's rate limiter gives it a turn
    (``MAILER_RATE_LIMIT``, see ``mailer.transports.ratelimit``); a refusal
    that says the client is too fast slows the limiter down.

    Args:
        settings: The relay's settings.
        limiter: Paces this relay's transactions; default a LocalRateLimiter
            from ``MAILER_RATE_LIMIT`` and ``MAILER_RATE_COOLDOWN``.
    """

    def __init__(
        self, settings: MailerSettings, *, limiter: RateLimiter | None = None
    ) -> None:
        self.settings = settings
        self.server = f"{settings.smtp_host}:{settings.port}"
        self.limiter: RateLimiter = (
            limiter
            if limiter is not None
            else LocalRateLimiter(
                settings.rate, cooldown=settings.rate_cooldown, name=self.server
            )
        )
        self.pool = ConnectionPool(
            lambda: SMTPConnection(settings),
            limits_from_settings(settings),
            timeout=settings.timeout,
            message_timeout=settings.message_timeout,
            gate=self.limiter,
        )

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Send one message on a pooled connection (see ``deliver_with_progress``)."""
        return await self.deliver_with_progress(envelope, content, DeliveryProgress())

    async def deliver_with_progress(
        self, envelope: Envelope, content: bytes, progress: DeliveryProgress, /
    ) -> Delivery:
        """Send one message on a pooled connection, within ``MAILER_MESSAGE_TIMEOUT``.

        ``progress.content_starting`` is called just before the content is
        written (after the server's 354), never after this call was
        cancelled: a transaction whose sender gave up before its content is
        dropped.

        Raises:
            DeliveryError: A subclass saying what failed; partial refusals are
                returned in ``Delivery.refused`` instead. ``ambiguous`` is set
                when the failure came once the content may have been written
                (``Phase.DATA``) and before a well-formed reply to it (none, or
                a malformed or out-of-step one): the server may have accepted
                the message.
        """
        generation = self.limiter.generation
        transaction = Transaction(envelope, content, progress=progress)
        try:
            with map_smtp_errors(self.server):
                delivery = await self.pool.send(transaction)
        except DeliveryError as exc:
            if transaction.phase is Phase.DATA:
                exc.ambiguous = True
            exc.relay = self.server
            replies = [exc.reply] if exc.reply is not None else []
            if isinstance(exc, RecipientsRefusedError):
                replies += exc.refused.values()
            await self._note_refusals(replies, generation)
            raise
        if delivery.refused:
            await self._note_refusals(delivery.refused.values(), generation)
        return replace(delivery, relay=self.server)

    async def _note_refusals(self, replies: Iterable[Reply], generation: int) -> None:
        """Slow the relay down if one of ``replies`` refused for rate."""
        for reply in replies:
            if is_rate_refusal(reply):
                await self.limiter.record_refusal(reply, generation=generation)
                return

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.pool.aclose()
