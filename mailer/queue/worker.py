"""Run a queue worker: procrastinate's worker, one MessageClient, stalled-job recovery.

``run_worker`` runs until ``stop`` is set (the CLI sets it on SIGTERM or
SIGINT). Then no new job starts, the SMTP transactions in flight get
``MAILER_SHUTDOWN_GRACE`` seconds, every outcome is recorded, and each job's
unfinished messages go back to the queue at once for another worker.

The worker's SMTP transports pace each relay with a ``SharedRateLimiter``
(``mailer.queue.ratelimit``): ``MAILER_RATE_LIMIT`` holds for all the workers
together, and a rate refusal seen by one slows them all.

Every ``MAILER_QUEUE_HEARTBEAT`` seconds the worker beats, and looks for jobs
left ``doing`` by a worker that missed three beats (killed with ``kill -9``,
or its host died): it puts them back in the queue (stalled-job recovery).
Their messages that were ``sending`` are then resent as ambiguous with the
same Message-ID, by whichever worker takes the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from functools import partial

from mailer.config.settings import MailerSettings
from mailer.delivery.client import MessageClient, generate_message_client
from mailer.queue.database import connect, database_errors, queue_dsn
from mailer.queue.locks import MessageLocks
from mailer.queue.ratelimit import PostgresRateStore, SharedRateLimits
from mailer.queue.runtime import DeliveryRuntime
from mailer.queue.schema import check_schema
from mailer.queue.tasks import QUEUE_NAME, RUNTIME_KEY, make_app

logger = logging.getLogger("mailer.queue")

# A worker that missed this many heartbeats is taken for dead.
MISSED_HEARTBEATS = 3
# Seconds procrastinate waits for jobs after ours ended theirs (the grace).
SHUTDOWN_MARGIN = 10.0


def worker_name() -> str:
    """Return ``host:pid``, which names this worker in the queue's records."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def _recover_stalled(app: object, *, every: float, stalled_after: float) -> None:
    """Put back in the queue the jobs of workers that stopped beating."""
    from procrastinate import App

    assert isinstance(app, App)  # noqa: S101 - typed loosely for the import
    while True:
        await asyncio.sleep(every)
        try:
            stalled = await app.job_manager.get_stalled_jobs(
                queue=QUEUE_NAME, seconds_since_heartbeat=stalled_after
            )
            for job in stalled:
                try:
                    await app.job_manager.retry_job(job)
                except Exception as exc:  # noqa: BLE001 - another worker was first
                    logger.debug("job %s already re-queued: %s", job.id, exc)
                    continue
                logger.warning(
                    "job %s of a stalled worker put back in the queue", job.id
                )
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            logger.warning("stalled-job recovery failed: %s", type(exc).__name__)


async def run_worker(
    settings: MailerSettings,
    *,
    concurrency: int,
    stop: asyncio.Event,
    client_factory: Callable[[MailerSettings], MessageClient] | None = None,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Deliver queued mail until ``stop`` is set.

    Args:
        settings: ``MAILER_QUEUE_DSN``, the SMTP settings and the rest.
        concurrency: Jobs run at once (each sends its messages over the
            shared client's ``MAILER_CONCURRENCY`` connections).
        stop: Set it to stop gracefully.
        client_factory: Makes the process's client; default
            ``generate_message_client`` with the rate limiters the queue's
            workers share.
        on_started: Called with the worker's name once it takes jobs.

    Raises:
        ConfigError: ``MAILER_QUEUE_DSN`` is not set.
        QueueError: The database cannot be used or has no schema.
    """
    import psycopg

    dsn = queue_dsn(settings)
    name = worker_name()
    async with connect(settings, action="cannot start the worker") as connection:
        with database_errors("cannot start the worker", dsn):
            await check_schema(connection)
    app = make_app(dsn, max_connections=concurrency + 4)
    heartbeat = settings.queue_heartbeat
    with database_errors("the worker stopped", dsn):
        async with app.open_async():
            lock_connection = await psycopg.AsyncConnection.connect(
                dsn, autocommit=True
            )
            store = PostgresRateStore(dsn, stale_after=MISSED_HEARTBEATS * heartbeat)
            try:
                async with SharedRateLimits(store) as limits:
                    factory = client_factory or partial(
                        generate_message_client, limiters=limits.limiter
                    )
                    async with factory(settings) as client:
                        runtime = DeliveryRuntime(
                            settings=settings,
                            client=client,
                            pool=app.connector.pool,  # type: ignore[attr-defined]
                            locks=MessageLocks(lock_connection),
                            app=app,
                            worker=name,
                            stop=stop,
                        )
                        await _work(app, runtime, concurrency, heartbeat, on_started)
                    if limits.limiters:
                        logger.info("%s", limits.summary())
            finally:
                await lock_connection.close()


async def _work(
    app: object,
    runtime: DeliveryRuntime,
    concurrency: int,
    heartbeat: float,
    on_started: Callable[[str], None] | None,
) -> None:
    from procrastinate import App

    assert isinstance(app, App)  # noqa: S101 - typed loosely for the import
    settings = runtime.settings
    worker = asyncio.create_task(
        app.run_worker_async(
            queues=[QUEUE_NAME],
            name=runtime.worker,
            concurrency=concurrency,
            install_signal_handlers=False,  # ours set `stop`, see mailer.cli
            additional_context={RUNTIME_KEY: runtime},
            shutdown_graceful_timeout=settings.shutdown_grace + SHUTDOWN_MARGIN,
            update_heartbeat_interval=heartbeat,
            stalled_worker_timeout=MISSED_HEARTBEATS * heartbeat,
            fetch_job_polling_interval=heartbeat,
            abort_job_polling_interval=heartbeat,
            delete_jobs="successful",
        ),
        name="procrastinate worker",
    )
    recovery = asyncio.create_task(
        _recover_stalled(
            app, every=heartbeat, stalled_after=MISSED_HEARTBEATS * heartbeat
        ),
        name="stalled-job recovery",
    )
    stopping = asyncio.create_task(runtime.stop.wait())
    if on_started is not None:
        on_started(runtime.worker)
    try:
        await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        recovery.cancel()
        stopping.cancel()
        if not worker.done():
            # procrastinate's graceful stop: no new job, wait for the running
            # ones (which end once our grace is over).
            worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        with contextlib.suppress(asyncio.CancelledError):
            await recovery
