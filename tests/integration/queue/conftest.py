"""Queue tests: settings for a test database and SMTP server, in-process workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mailer import MailerSettings
from mailer.testing import SMTPTestServer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def queue_settings(queue_database: str) -> Callable[..., MailerSettings]:
    """Make settings for the test's queue database and an SMTP test server."""

    def make(server: SMTPTestServer | None = None, **overrides: Any) -> MailerSettings:
        values: dict[str, Any] = {
            "_env_file": None,
            "queue_dsn": queue_database,
            "from_": "Example Shop <shop@example.test>",
            "templates_dir": EXAMPLES / "templates",
            "retry_backoff": 0.01,
            "retry_max_backoff": 0.05,
            "queue_heartbeat": 1,
            "timeout": 5,
        }
        if server is not None:
            values.update(smtp_host=server.host, smtp_port=server.port, smtp_tls="none")
        values.update(overrides)
        return MailerSettings(**values)

    return make


@contextlib.asynccontextmanager
async def worker_running(
    settings: MailerSettings, *, concurrency: int = 2
) -> AsyncIterator[asyncio.Event]:
    """Run a queue worker in this event loop until the block ends."""
    from mailer.queue.worker import run_worker

    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            settings,
            concurrency=concurrency,
            stop=stop,
            on_started=lambda name: started.set(),
        )
    )
    async with asyncio.timeout(30):
        await asyncio.wait(
            {task, asyncio.create_task(started.wait())},
            return_when=asyncio.FIRST_COMPLETED,
        )
    if task.done():
        task.result()  # raises what stopped it
    try:
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await task


@pytest.fixture
def run_worker_in_loop() -> Callable[..., Any]:
    """Return ``worker_running(settings, concurrency=2)``, an async context manager."""
    return worker_running


async def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one query on the queue database; return its rows."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        cursor = await c.execute(query.encode(), params or None)
        return await cursor.fetchall() if cursor.description else []


@pytest.fixture
def query(queue_database: str) -> Callable[..., Any]:
    """Return ``await query(sql, *params) -> rows`` on the test's queue database."""

    async def run(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return await rows(queue_database, sql, *params)

    return run
