"""Declare the queue's procrastinate app and its one task, ``mailer.deliver``.

A job's arguments are row ids of ``mailer_messages`` (one for ``send_later``,
up to ``MAILER_QUEUE_JOB_SIZE`` for a batch) and ``retry``, true for the job
that retries one deferred message. The message itself, its Message-ID and its
state are in the row, so a job can run twice (stalled-job recovery) without
harm: what was sent is not sent again.

A job that could not finish its messages (the worker is stopping, a refused
login, another worker holds one of them) raises ``DeliveryIncompleteError``;
``IncompleteRetryStrategy`` puts it back in the queue, at once or after a
backoff, so every unfinished message always has a job that will come back for
it.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from procrastinate import App, BaseRetryStrategy, JobContext, PsycopgConnector
from procrastinate.retry import RetryDecision

if TYPE_CHECKING:
    from procrastinate.jobs import Job

    from mailer.queue.database import Connection
    from mailer.queue.runtime import DeliveryRuntime

TASK_NAME = "mailer.deliver"
QUEUE_NAME = "mailer"
RUNTIME_KEY = "mailer_runtime"
# A message enqueued alone (a receipt) goes before the chunks of a big batch;
# a retry goes before both, as it has waited already.
BATCH_PRIORITY = 0
SINGLE_PRIORITY = 10
RETRY_PRIORITY = 20
# An unexpected error (the database restarting, a bug): the job is tried again
# this many times, backing off up to UNEXPECTED_MAX_WAIT seconds.
UNEXPECTED_ATTEMPTS = 20
UNEXPECTED_MAX_WAIT = 300.0


class DeliveryIncompleteError(Exception):
    """Some messages of the job are not finished; run the job again later.

    Args:
        reason: Why, for the logs.
        retry_in: Seconds until the job runs again.
    """

    def __init__(self, reason: str, *, retry_in: float) -> None:
        super().__init__(reason)
        self.retry_in = retry_in


class IncompleteRetryStrategy(BaseRetryStrategy):
    """Re-queue an incomplete job when it asks; back off after other errors."""

    def get_retry_decision(
        self, *, exception: BaseException, job: Job
    ) -> RetryDecision | None:
        """Return when to run the job again, or None to give it up."""
        if isinstance(exception, DeliveryIncompleteError):
            wait = exception.retry_in
        elif job.attempts >= UNEXPECTED_ATTEMPTS:
            return None
        else:
            wait = min(UNEXPECTED_MAX_WAIT, 2.0**job.attempts)
        return RetryDecision(retry_at=datetime.now(UTC) + timedelta(seconds=wait))


async def deliver(context: JobContext, messages: list[int], retry: bool = False) -> str:
    """Deliver the queued messages with these row ids (the job's body).

    Args:
        context: procrastinate's job context; its ``additional_context``
            holds the worker's DeliveryRuntime.
        messages: Row ids in ``mailer_messages``.
        retry: Whether this job retries a deferred message (it runs whatever
            that message's scheduled time).

    Returns:
        A one-line summary, for procrastinate's log.

    Raises:
        DeliveryIncompleteError: Some messages must be tried again later.
    """
    runtime: DeliveryRuntime = context.additional_context[RUNTIME_KEY]
    return await runtime.deliver(
        messages, retry=retry, job_attempts=context.job.attempts
    )


async def _autocommit(connection: Connection) -> None:
    # Each statement commits by itself unless a transaction is opened: the
    # 'sending' mark is on disk before the SMTP command that follows it.
    await connection.set_autocommit(True)


def make_app(dsn: str | None = None, *, max_connections: int = 4) -> App:
    """Return a procrastinate App with the ``mailer.deliver`` task.

    Args:
        dsn: The queue database; None for an app that only defers jobs on
            connections it is given (it is never opened).
        max_connections: The size of the pool once the app is opened.
    """
    pool: dict[str, Any] = {"configure": _autocommit}
    if dsn is not None:
        pool.update(conninfo=dsn, min_size=1, max_size=max_connections)
    app = App(connector=PsycopgConnector(**pool))
    app.task(
        name=TASK_NAME,
        queue=QUEUE_NAME,
        pass_context=True,
        retry=IncompleteRetryStrategy(),
    )(deliver)
    return app


@functools.cache
def deferring_app() -> App:
    """Return the app that defers jobs on connections it is given (never opened)."""
    return make_app()
