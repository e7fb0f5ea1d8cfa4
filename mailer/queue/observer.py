"""Record each attempt of a queued message in PostgreSQL (an AttemptObserver).

A worker's client makes one attempt per job (its retries are off): a message
whose recipients were deferred is not retried in a sleeping worker but
re-scheduled as a retry job, ``schedule_in`` the backoff of
``MAILER_RETRY_*``, committed in the same transaction as its ``deferred``
state, so that no deferred message is ever without the job that retries it.

Before an attempt, the observer compares the bytes it is about to send with
the digest of the last attempt's: a message that may have been delivered
(in flight when its worker died, or accepted by some recipients) is never
resent as a different copy; it stays pending for a worker whose DKIM key and
hooks build the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mailer.bulk.journal import JournalEntry, JournalState
from mailer.delivery.retry import RetryPolicy
from mailer.delivery.state import MessageAttempts
from mailer.exceptions import QueuedContentChangedError, describe_error
from mailer.queue import store
from mailer.replies import RecipientStatus, Verdict

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from mailer.queue.database import Connection

# Defers the retry job of one message in the given connection's transaction.
RetryScheduler = Callable[["Connection", int, float], Awaitable[None]]


def settle(
    entry: JournalEntry,
    attempts: MessageAttempts,
    *,
    total_attempts: int,
    elapsed: float,
    policy: RetryPolicy,
) -> float | None:
    """Update ``entry`` with how an attempt ended; return the retry delay, if any.

    Args:
        entry: The message's state before the attempt (changed in place).
        attempts: What the attempt did to each recipient.
        total_attempts: The message's attempts across every job, this one
            included.
        elapsed: Seconds since the message's first attempt started.
        policy: The retry policy of ``MAILER_MAX_ATTEMPTS`` and friends.

    Returns:
        Seconds until the retry job, when the message is ``deferred``.
    """
    entry.attempts = total_attempts
    entry.ambiguous = entry.ambiguous or attempts.ambiguous
    entry.recipients.update(attempts.statuses)
    for recipient, status in attempts.statuses.items():
        if status is RecipientStatus.ACCEPTED:
            entry.replies.pop(recipient, None)
    entry.replies.update(attempts.replies)
    entry.reply = attempts.last_reply or entry.reply
    deferred = [r for r, s in entry.recipients.items() if s is RecipientStatus.DEFERRED]
    accepted = RecipientStatus.ACCEPTED in entry.recipients.values()
    retry_in: float | None = None
    if deferred and attempts.verdict is Verdict.FATAL:
        # A refused login or a TLS failure says nothing about this message:
        # it waits, pending, for its job to be tried again.
        entry.state = JournalState.PENDING
    elif deferred:
        retry_in = policy.next_delay(total_attempts, elapsed)
        entry.state = JournalState.FAILED if retry_in is None else JournalState.DEFERRED
    elif accepted:
        entry.state = JournalState.SENT
    else:
        entry.state = JournalState.FAILED
    entry.transient = bool(deferred)
    entry.error = None
    if entry.state is not JournalState.SENT:
        error = attempts.last_error
        entry.error = (
            describe_error(error)
            if error is not None
            else f"{len(deferred)} recipient(s) still deferred: {entry.reply}"
        )
    return retry_in


class QueueObserver:
    """Write each attempt of one queued message to ``mailer_messages``.

    Args:
        connection: The job's autocommit connection, shared by the messages
            of the job (one statement each, so they never mix).
        pool: The worker's connection pool, for the transaction that records
            a deferral together with its retry job.
        entry: The message's state as loaded by the job.
        policy: The retry policy (the client's own retries are off).
        worker: This worker's name, recorded with ``sending``.
        schedule_retry: Defers the message's retry job on a connection.
        slots: The worker's ``MAILER_CONCURRENCY`` attempt slots.
    """

    def __init__(
        self,
        connection: Connection,
        pool: AsyncConnectionPool[Connection],
        entry: JournalEntry,
        *,
        policy: RetryPolicy,
        worker: str,
        schedule_retry: RetryScheduler,
        slots: asyncio.Semaphore,
    ) -> None:
        self.connection = connection
        self.pool = pool
        self.entry = entry
        self.policy = policy
        self.worker = worker
        self.schedule_retry = schedule_retry
        self.slots = slots
        self._holding = False
        self.retry_in: float | None = None
        self._total_attempts = entry.attempts
        self._elapsed_at_start = 0.0
        self._started = time.monotonic()

    async def attempt_starting(self, attempts: MessageAttempts, /) -> None:
        """Take one of the worker's slots, then commit ``sending``.

        Raises:
            QueuedContentChangedError: The message may have been delivered,
                and this worker would send other bytes (recorded: the message
                is left pending, with the reason).
        """
        digest = hashlib.sha256(attempts.outgoing.content).hexdigest()
        await self._check_same_bytes(digest)
        # The worker's slots, not the job's: however many jobs run, at most
        # MAILER_CONCURRENCY of its messages are ever 'sending' at once, so a
        # crash leaves no more than that in doubt.
        await self.slots.acquire()
        self._holding = True
        try:
            total, elapsed, ambiguous = await store.record_starting(
                self.connection,
                self.entry.position,
                self.worker,
                attempts.outgoing.date,
                digest,
            )
        except BaseException:
            self.release()
            raise
        self._total_attempts = total
        self._elapsed_at_start = elapsed
        self._started = time.monotonic()
        self.entry.state = JournalState.SENDING
        self.entry.attempts = total
        self.entry.ambiguous = ambiguous

    async def attempt_ended(
        self, attempts: MessageAttempts, /, *, retry_in: float | None
    ) -> None:
        """Commit the outcome, and the retry job of a deferred message with it."""
        del retry_in  # the worker's client makes one attempt: we decide here
        elapsed = self._elapsed_at_start + (time.monotonic() - self._started)
        delay = settle(
            self.entry,
            attempts,
            total_attempts=self._total_attempts,
            elapsed=elapsed,
            policy=self.policy,
        )
        self.retry_in = delay
        try:
            if delay is None:
                await store.record_outcome(self.connection, self.entry, retry_in=None)
                return
            # Both or neither: a deferred message always has its retry job.
            async with (
                self.pool.connection() as connection,
                connection.transaction(),
            ):
                await store.record_outcome(connection, self.entry, retry_in=delay)
                await self.schedule_retry(connection, self.entry.position, delay)
        finally:
            self.release()

    async def _check_same_bytes(self, digest: str) -> None:
        """Refuse to resend a message in doubt as other bytes than last time.

        The Date and Message-ID are stored, so the same mailer with the same
        DKIM key and hooks builds the same bytes on any worker; a worker set
        up otherwise would send a second, different copy of a message that
        may have arrived. It leaves it pending instead (the job comes back).
        """
        entry = self.entry
        if entry.digest is None or entry.digest == digest:
            return
        if not entry.may_have_arrived:
            return  # nothing can have arrived: these bytes are the first copy
        error = QueuedContentChangedError(
            f"message {entry.position} ({entry.email}) may have been delivered "
            "already, and this worker would resend it as different bytes (its "
            "DKIM key, before_send hooks or mailer version differ from those of "
            "the worker that sent it): left pending for a worker set up like "
            "that one"
        )
        entry.ambiguous = entry.ambiguous or entry.state is JournalState.SENDING
        entry.state = JournalState.PENDING
        entry.error = str(error)
        await store.record_outcome(self.connection, entry, retry_in=None)
        raise error

    def release(self) -> None:
        """Give the worker's slot back, if this message holds it."""
        if self._holding:
            self._holding = False
            self.slots.release()
