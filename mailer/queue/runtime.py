"""Run one job's messages through the worker's shared client: DeliveryRuntime.

Per worker process there is one ``MessageClient`` (so SMTP connections and
pipelining carry over from job to job), one pool of database connections,
one lock connection (``mailer.queue.locks``) and one stop event (set on
SIGTERM/SIGINT). What a job does with each of its messages, by state:

* ``sent``, ``failed``: nothing (a job that runs twice sends nothing twice);
* ``pending``: sent;
* ``sending``: its worker ended during an attempt; it may have been
  delivered, so it is resent as ambiguous, with the same Message-ID;
* ``deferred``: sent by its retry job; any other job leaves it to that one
  until its time has come.

Only the recipients who have not accepted or refused it are sent to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from mailer.bulk.journal import JournalState
from mailer.config.settings import MailerSettings
from mailer.delivery.client import MessageClient
from mailer.delivery.control import SendRequest
from mailer.delivery.results import SendStatus
from mailer.delivery.retry import RetryPolicy
from mailer.exceptions import MailerError
from mailer.queue import store
from mailer.queue.codec import decode_message
from mailer.queue.locks import MessageLocks
from mailer.queue.observer import QueueObserver
from mailer.queue.tasks import (
    QUEUE_NAME,
    RETRY_PRIORITY,
    TASK_NAME,
    DeliveryIncompleteError,
)

if TYPE_CHECKING:
    from procrastinate import App
    from procrastinate.types import JSONValue
    from psycopg_pool import AsyncConnectionPool

    from mailer.queue.database import Connection

logger = logging.getLogger("mailer.queue")

# Seconds before a job whose messages another worker holds looks again.
BUSY_RETRY = 2.0


def worker_client(client: MessageClient) -> MessageClient:
    """Make ``client`` try each message once per job (retries become jobs)."""
    policy = client.retry_policy
    client.retry_policy = RetryPolicy(
        max_attempts=1,
        backoff=policy.backoff,
        max_backoff=policy.max_backoff,
        deadline=policy.deadline,
    )
    return client


class DeliveryRuntime:
    """What the jobs of one worker process share.

    Args:
        settings: The worker's settings (retry policy, shutdown grace).
        client: The process's client (its retries are turned off here).
        pool: The worker's database pool (autocommit connections).
        locks: The worker's message locks.
        app: The procrastinate app, to defer retry jobs.
        worker: This worker's name (``host:pid``).
        stop: Set to stop: no new attempt, those in flight get the grace.
    """

    def __init__(
        self,
        *,
        settings: MailerSettings,
        client: MessageClient,
        pool: AsyncConnectionPool[Connection],
        locks: MessageLocks,
        app: App,
        worker: str,
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.policy = RetryPolicy.from_settings(settings)
        self.client = worker_client(client)
        self.pool = pool
        self.locks = locks
        self.app = app
        self.worker = worker
        self.stop = stop
        # Attempts of all jobs together: what a crash can leave in doubt.
        self.slots = asyncio.Semaphore(settings.concurrency)

    async def schedule_retry(
        self, connection: Connection, message: int, delay: float
    ) -> None:
        """Defer the retry job of one message, in ``connection``'s transaction."""
        deferrer = self.app.configure_task(
            TASK_NAME,
            connection=connection,
            schedule_in={"seconds": delay},
            queue=QUEUE_NAME,
            priority=RETRY_PRIORITY,
        )
        await deferrer.defer_async(messages=cast("JSONValue", [message]), retry=True)

    async def deliver(
        self, ids: Sequence[int], *, retry: bool, job_attempts: int
    ) -> str:
        """Deliver the messages of one job that are due.

        Raises:
            DeliveryIncompleteError: Some must be tried again (stopping, a
                refused login, held by another worker).
        """
        held, rows, busy = await self.locks.acquire(ids)
        try:
            # One connection for the whole job: its messages' state changes
            # are single autocommit statements, one after the other.
            async with self.pool.connection() as connection:
                counts, unfinished, reason = await self._send(
                    connection, rows, retry=retry
                )
        finally:
            await self.locks.release(held)
        if unfinished:
            if self.stop.is_set():
                # Another worker takes the rest at once.
                raise DeliveryIncompleteError(
                    f"{unfinished} message(s) left: the worker is stopping",
                    retry_in=0,
                )
            wait = min(
                self.policy.max_backoff,
                self.policy.backoff * 2 ** min(job_attempts, 30),
            )
            raise DeliveryIncompleteError(
                f"{unfinished} message(s) not finished: {reason}", retry_in=wait
            )
        if busy:
            raise DeliveryIncompleteError(
                f"{len(busy)} message(s) held by another job; trying again",
                retry_in=BUSY_RETRY,
            )
        return (
            ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "nothing due"
        )

    async def _send(
        self, connection: Connection, rows: list[store.QueuedMessage], *, retry: bool
    ) -> tuple[dict[str, int], int, str]:
        counts = {"sent": 0, "deferred": 0, "failed": 0, "pending": 0, "done": 0}
        requests: list[SendRequest] = []
        observers: list[QueueObserver] = []
        for row in rows:
            entry = row.entry
            if entry.state in (JournalState.SENT, JournalState.FAILED):
                counts["done"] += 1
                continue
            if entry.state is JournalState.DEFERRED and not retry and not row.is_due:
                counts["done"] += 1  # its retry job will send it
                continue
            request = await self._request(connection, row, observers)
            if request is not None:
                requests.append(request)
        unfinished = 0
        reason = ""
        results = self.client.stream(
            requests, stop=self.stop, in_flight=self.settings.concurrency
        )
        try:
            outcomes = [item async for item in results]
        finally:
            # An attempt cut off at shutdown never reached attempt_ended.
            for observer in observers:
                observer.release()
        for index, result in outcomes:
            state = observers[index].entry.state
            if result.status is SendStatus.PENDING or state is JournalState.PENDING:
                unfinished += 1
                reason = reason or (result.error or "not sent")
                counts["pending"] += 1
            elif state is JournalState.SENT:
                counts["sent"] += 1
            elif state is JournalState.DEFERRED:
                counts["deferred"] += 1
            else:
                counts["failed"] += 1
        return counts, unfinished, reason

    async def _request(
        self,
        connection: Connection,
        row: store.QueuedMessage,
        observers: list[QueueObserver],
    ) -> SendRequest | None:
        entry = row.entry
        try:
            message = decode_message(row.message)
        except (MailerError, ValueError, KeyError, TypeError) as exc:
            entry.state = JournalState.FAILED
            entry.error = f"the queued message cannot be read: {exc}"
            await store.record_outcome(connection, entry, retry_in=None)
            return None
        recipients = None
        if entry.settled:
            sender = message.sender
            assert sender is not None  # noqa: S101 - the codec always stores one
            recipients = tuple(
                r for r in message.envelope(sender).rcpt_tos if r not in entry.settled
            )
            if not recipients:
                # Cannot happen: an outcome is recorded with its recipients.
                logger.warning("message %s has nobody left to send to", row.id)
                return None
        observer = QueueObserver(
            connection,
            self.pool,
            entry,
            policy=self.policy,
            worker=self.worker,
            schedule_retry=self.schedule_retry,
            slots=self.slots,
        )
        observers.append(observer)
        # The Message-ID and the Date recorded for it: every attempt, on any
        # worker, builds (and DKIM-signs) the same bytes.
        return SendRequest(
            message,
            message_id=entry.message_id,
            recipients=recipients,
            observer=observer,
            date=row.date,
        )
