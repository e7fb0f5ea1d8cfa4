"""Keep up to N SMTP connections busy: a queue of transactions and N lanes.

Senders put a Transaction in the queue and await its outcome. Each lane (see
``lane.py``) owns one connection and takes transactions one after another; lanes
start lazily, as work arrives, up to ``PoolLimits.size``, so a pool never opens
more connections than it has work for. This is the push model of Nodemailer's
pool (5 connections, 100 messages each), which lets a connection chain the next
message into the same round trip under PIPELINING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mailer.config.settings import MailerSettings
from mailer.transports.base import Delivery
from mailer.transports.ratelimit import RateLimiter
from mailer.transports.smtp.connection import SMTPConnection
from mailer.transports.smtp.lane import Lane
from mailer.transports.smtp.transactions import (
    PoolLimits,
    Transaction,
    TransactionQueue,
)

logger = logging.getLogger("mailer")

__all__ = ["ConnectionPool", "PoolLimits", "Transaction", "limits_from_settings"]


def limits_from_settings(settings: MailerSettings) -> PoolLimits:
    """Return the limits set by ``MAILER_CONCURRENCY`` and ``MAILER_POOL_*``."""
    return PoolLimits(
        size=settings.concurrency,
        max_messages=settings.pool_max_messages,
        max_age=settings.pool_max_age,
        max_idle=settings.pool_max_idle,
    )


class ConnectionPool:
    """Send transactions over at most ``limits.size`` reused SMTP connections.

    Args:
        new_connection: Makes an unopened SMTPConnection.
        limits: Size and reuse limits.
        timeout: Seconds to wait for each server reply.
        message_timeout: Seconds for a whole transaction, from MAIL FROM to
            the reply after the content.
        gate: The relay's rate limiter: each transaction starts on its turn.
    """

    def __init__(
        self,
        new_connection: Callable[[], SMTPConnection],
        limits: PoolLimits,
        *,
        timeout: float,
        message_timeout: float,
        gate: RateLimiter | None = None,
    ) -> None:
        self._new_connection = new_connection
        self._gate = gate
        self.limits = limits
        self._timeout = timeout
        self._message_timeout = message_timeout
        self._queue = TransactionQueue()
        self._lanes: dict[asyncio.Task[None], Lane] = {}

    @property
    def is_closed(self) -> bool:
        """Return whether ``aclose`` was called."""
        return self._queue.is_closed

    async def send(self, transaction: Transaction) -> Delivery:
        """Queue ``transaction`` and return its Delivery once a lane has sent it.

        Raises:
            RuntimeError: The pool is closed.
            Exception: Whatever stopped the transaction (aiosmtplib, TLS or socket
                errors, RecipientsRefusedError...), for the caller to map.
        """
        if self.is_closed:
            raise RuntimeError("the connection pool is closed")
        if not self._queue.put(transaction) and len(self._lanes) < self.limits.size:
            self._start_lane()
        return await transaction.outcome

    def _start_lane(self) -> None:
        lane = Lane(
            self._queue,
            self._new_connection,
            self.limits,
            self._timeout,
            self._message_timeout,
            gate=self._gate,
        )
        task = asyncio.get_running_loop().create_task(lane.run())
        lane.task = task
        self._lanes[task] = lane
        task.add_done_callback(self._lane_ended)
        if self.is_closed:
            lane.close_soon()

    def _lane_ended(self, task: asyncio.Task[None]) -> None:
        lane = self._lanes.pop(task)
        if task.cancelled():
            if not lane.is_cut_short:
                return  # the event loop is shutting down
        elif (error := task.exception()) is not None:
            logger.error("a connection lane stopped", exc_info=error)
        # Its own transactions were settled; work still queued must not wait
        # forever (aclose waits for this lane too).
        if self._queue.has_live_work():
            self._start_lane()

    async def aclose(self) -> None:
        """Finish queued work, QUIT every connection and stop the lanes.

        Work whose senders gave up (their tasks were cancelled) is not waited
        for: the lanes holding only such work stop at once.
        """
        self._queue.close()
        for lane in list(self._lanes.values()):
            lane.close_soon()
        while self._lanes:
            await asyncio.gather(*self._lanes, return_exceptions=True)
