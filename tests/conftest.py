"""Shared fixtures: isolation from the developer's own configuration, and factories."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer import MailerSettings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as `integration`, so none is missed."""
    for item in items:
        if "integration" in Path(str(item.path)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """Keep the developer's MAILER_* variables and .env out of every test."""
    for key in list(os.environ):
        if key.upper().startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return


@pytest.fixture
def make_settings() -> Callable[..., MailerSettings]:
    """Build settings from keywords only (no .env), with a sender and the examples."""

    def make(**overrides: Any) -> MailerSettings:
        values: dict[str, Any] = {
            "_env_file": None,
            "from_": "Example Shop <shop@example.test>",
            "templates_dir": EXAMPLES / "templates",
            # Retries stay on, as in production, but wait milliseconds.
            "retry_backoff": 0.001,
            "retry_max_backoff": 0.005,
        }
        values.update(overrides)
        return MailerSettings(**values)

    return make


@pytest.fixture
def configured_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set MAILER_FROM and MAILER_TEMPLATES_DIR (the examples), as a CLI user would."""
    monkeypatch.setenv("MAILER_FROM", "Example Shop <shop@example.test>")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(EXAMPLES / "templates"))


@pytest.fixture
def settings(make_settings: Callable[..., MailerSettings]) -> MailerSettings:
    """Settings for loopback SMTP with the example templates."""
    return make_settings()


# --- A real PostgreSQL for the queue's tests (issue 15) -----------------------
# One throwaway cluster per test session (mailer.testing.postgres: a temporary
# directory, 127.0.0.1 and a free port, stopped at the end); each test that
# asks gets a database of its own, so tests never see each other's jobs.


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """The session's PostgreSQL server (a TemporaryPostgres)."""
    from mailer.testing.postgres import TemporaryPostgres

    with TemporaryPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def _queue_template(postgres: Any) -> str:
    """A database with the queue's schema, copied for each test that needs one."""
    import asyncio
    import concurrent.futures

    import psycopg

    from mailer.queue.schema import apply_schema

    name = "queue_template"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")

    async def init() -> None:
        dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
            await apply_schema(c)

    # In a thread of its own: this may be set up inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, init()).result()
    return name


def _new_database(postgres: Any, template: str | None) -> Iterator[str]:
    import psycopg

    number = next(_DATABASE_NUMBERS)
    name = f"test_{os.getpid()}_{number}"
    copy = f" TEMPLATE {template}" if template else ""
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}{copy}")
    try:
        yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


_DATABASE_NUMBERS = iter(range(1, 1_000_000))


@pytest.fixture
def empty_database(postgres: Any) -> Iterator[str]:
    """The DSN of a new, empty database (no queue schema)."""
    yield from _new_database(postgres, None)


@pytest.fixture
def queue_database(postgres: Any, _queue_template: str) -> Iterator[str]:
    """The DSN of a new database with the queue's schema (`mailer queue init` done)."""
    yield from _new_database(postgres, _queue_template)
