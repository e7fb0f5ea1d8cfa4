"""Describe the work a pool shares out: transactions, their queue, reuse limits."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import aiosmtplib

from mailer.content.message import Envelope
from mailer.replies import Reply
from mailer.transports.base import Delivery, DeliveryProgress
from mailer.transports.smtp.connection import Phase


class AbandonedError(Exception):
    """A transaction whose sender gave up before its content was written."""


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """How many connections a pool opens and how long each one is reused.

    Attributes:
        size: Connections open at once (``MAILER_CONCURRENCY``).
        max_messages: Transactions per connection before QUIT and a new one.
        max_age: Seconds after opening when a connection takes no new message.
        max_idle: Seconds a connection may sit unused before it is closed.
    """

    size: int = 5
    max_messages: int = 100
    max_age: float = 300.0
    max_idle: float = 10.0


@dataclass(eq=False)
class Transaction:
    """One message handed to the pool: what to send, where it stands, how it ended.

    Attributes:
        envelope: MAIL FROM and RCPT TO addresses.
        content: The serialised message.
        outcome: Resolves to the Delivery, or to the error that stopped it.
        phase: ``ENVELOPE`` once MAIL FROM was sent; ``DATA`` once the content
            was written (a failure from then on may have been delivered);
            ``ANSWERED`` once a well-formed reply to the content came.
        deadline: When the transaction must have ended (event loop time), set
            as its MAIL FROM is written (``MAILER_MESSAGE_TIMEOUT`` later).
        progress: Told just before the content is written (``start_content``).
    """

    envelope: Envelope
    content: bytes
    outcome: asyncio.Future[Delivery] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    phase: Phase = Phase.IDLE
    deadline: float = float("inf")
    accepted: tuple[str, ...] = ()
    refused: dict[str, Reply] = field(default_factory=dict)
    progress: DeliveryProgress | None = None

    @property
    def is_abandoned(self) -> bool:
        """Return whether the sender stopped waiting (its task was cancelled)."""
        return self.outcome.done()

    def start_content(self) -> None:
        """Move to ``Phase.DATA``, the content about to be written; the last exit.

        Raises:
            AbandonedError: The sender gave up: the content must not go.
            Exception: What the progress hook raised (the journal could not
                note the attempt): the content must not go either.
        """
        if self.is_abandoned:
            raise AbandonedError("the sender gave up before the content")
        if self.progress is not None:
            self.progress.content_starting()
        self.phase = Phase.DATA

    def succeed(self, reply: aiosmtplib.SMTPResponse) -> None:
        """Resolve with the accepted and refused recipients and the final reply."""
        if not self.outcome.done():
            delivery = Delivery(
                self.accepted, self.refused, Reply(reply.code, reply.message)
            )
            self.outcome.set_result(delivery)

    def fail(self, error: BaseException) -> None:
        """Resolve with ``error`` (raised to the sender)."""
        if not self.outcome.done():
            self.outcome.set_exception(error)


class TransactionQueue:
    """Transactions waiting for a lane; lanes wait here for work."""

    def __init__(self) -> None:
        self._items: deque[Transaction] = deque()
        self._waiters: deque[asyncio.Future[Transaction | None]] = deque()
        self.is_closed = False

    def put(self, transaction: Transaction) -> bool:
        """Queue a transaction; return whether a waiting lane took it at once."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(transaction)
                return True
        self._items.append(transaction)
        return False

    def __len__(self) -> int:
        return len(self._items)

    def has_live_work(self) -> bool:
        """Return whether a queued transaction still has a sender waiting for it."""
        return any(not transaction.is_abandoned for transaction in self._items)

    def take_nowait(self) -> Transaction | None:
        """Return the next live transaction, or None when none is queued."""
        while self._items:
            transaction = self._items.popleft()
            if not transaction.is_abandoned:
                return transaction
        return None

    async def take(self, idle_limit: float | None) -> Transaction | None:
        """Wait for a transaction; None after ``idle_limit`` s or once closed."""
        transaction = self.take_nowait()
        if transaction is not None or self.is_closed:
            return transaction
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Transaction | None] = loop.create_future()
        self._waiters.append(waiter)

        def give_up() -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = None if idle_limit is None else loop.call_later(idle_limit, give_up)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Handed over just as the lane was cancelled: give it back.
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is not None:
                    self._items.appendleft(handed)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def close(self) -> None:
        """Let waiting lanes stop once the queue is empty."""
        self.is_closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
