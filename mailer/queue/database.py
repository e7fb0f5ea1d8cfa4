"""Reach the queue database: the DSN from settings, connections, readable errors.

Every psycopg and procrastinate error that reaches a user goes through
``database_errors``: one line, saying what failed, with the DSN's password
taken out even if a driver message quoted it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from mailer.config.settings import MailerSettings
from mailer.exceptions import ConfigError, QueueError

if TYPE_CHECKING:
    from typing import TypeAlias

    import psycopg

    # A connection whose rows are plain tuples (psycopg's default).
    Connection: TypeAlias = psycopg.AsyncConnection[tuple[Any, ...]]

DSN_KEY = "MAILER_QUEUE_DSN"
EXTRA_HINT = "pip install 'aiomailer[queue]'"
# Everything the queue needs from the [queue] extra.
EXTRA_MODULES = ("psycopg", "psycopg_pool", "procrastinate")


def require_extra() -> None:
    """Raise a one-line error unless the ``[queue]`` extra is installed.

    Raises:
        ConfigError: procrastinate or psycopg cannot be imported.
    """
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"{DSN_KEY}: the queue needs the [queue] extra ({name} is missing: "
                f"{type(exc).__name__}); {EXTRA_HINT}",
                key=DSN_KEY,
            ) from None


def queue_dsn(settings: MailerSettings) -> str:
    """Return ``MAILER_QUEUE_DSN`` (a secret: never print it).

    Raises:
        ConfigError: It is not set, or the extra is missing.
    """
    if settings.queue_dsn is None:
        raise ConfigError(
            f"{DSN_KEY}: not set; the queue needs a PostgreSQL database "
            "(postgresql://user:pass@host:5432/db)",
            key=DSN_KEY,
        )
    require_extra()
    return settings.queue_dsn.get_secret_value()


def secrets_of(dsn: str) -> list[str]:
    """Return the parts of ``dsn`` no output may show (its password)."""
    password = urlsplit(dsn).password
    if not password:
        return []
    return sorted({password, unquote(password)}, key=len, reverse=True)


def scrub(text: str, dsn: str | None) -> str:
    """Return ``text`` on one line, with the DSN and its password replaced."""
    line = " ".join(text.split())
    if dsn:
        line = line.replace(dsn, "[MAILER_QUEUE_DSN]")
        for secret in secrets_of(dsn):
            line = line.replace(secret, "[redacted]")
    return line


@contextlib.contextmanager
def database_errors(action: str, dsn: str | None) -> Iterator[None]:
    """Turn a psycopg or procrastinate error into a one-line QueueError.

    Args:
        action: What was being done ("cannot enqueue"), the start of the line.
        dsn: The DSN, so that its password can be kept out of the message.
    """
    import psycopg
    from procrastinate import exceptions as procrastinate_errors

    try:
        yield
    except psycopg.OperationalError as exc:
        raise QueueError(
            f"{action}: the queue database cannot be reached ({DSN_KEY}): "
            f"{scrub(str(exc), dsn)}"
        ) from None
    except psycopg.Error as exc:
        raise QueueError(f"{action}: {scrub(str(exc), dsn)}") from None
    except procrastinate_errors.ProcrastinateException as exc:
        cause = exc.__cause__ or exc
        raise QueueError(f"{action}: {scrub(str(cause), dsn)}") from None


@contextlib.asynccontextmanager
async def connect(
    settings: MailerSettings, *, action: str = "cannot use the queue"
) -> AsyncIterator[Connection]:
    """Open an autocommit connection to the queue database, closed on exit.

    Raises:
        ConfigError: ``MAILER_QUEUE_DSN`` is not set.
        QueueError: The database cannot be reached.
    """
    import psycopg

    dsn = queue_dsn(settings)
    with database_errors(action, dsn):
        connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        yield connection
    finally:
        await connection.close()
