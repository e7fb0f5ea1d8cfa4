"""Create and migrate the queue's tables: procrastinate's, then mailer's own.

``mailer queue init`` runs ``apply_schema``. It is idempotent and safe to run
from several hosts at once (a transaction-level advisory lock serialises the
runs):

* procrastinate's schema is applied when its jobs table does not exist yet.
  Upgrading procrastinate later means applying its own migration scripts
  (``procrastinate schema --migrations-path`` lists them); mailer pins a
  major version so that no such upgrade happens unannounced.
* mailer's tables are versioned in ``mailer_schema``: each entry of
  ``MIGRATIONS`` runs once, in order, in one transaction with the version it
  brings. A new release appends migrations (additive first, so that workers
  of the previous release keep running while the new ones roll out).

Workers and enqueuers call ``check_schema`` first, and refuse a database that
is missing migrations (run ``mailer queue init``) or that a newer mailer has
migrated (upgrade this one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailer.exceptions import QueueError
from mailer.queue.ratesql import RATE_LIMITS_SQL

if TYPE_CHECKING:
    from mailer.queue.database import Connection

# pg_advisory_xact_lock key for `mailer queue init` runs: "mail" in ASCII.
INIT_LOCK = 0x6D61696C

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "batches, messages and their delivery state",
        """
        CREATE TABLE mailer_batches (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            template text NOT NULL,
            source text NOT NULL,
            total integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE mailer_messages (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            batch_id bigint REFERENCES mailer_batches (id) ON DELETE CASCADE,
            line integer,
            email text NOT NULL,
            message jsonb NOT NULL,
            message_id text NOT NULL,
            state text NOT NULL DEFAULT 'pending' CHECK (
                state IN ('pending', 'sending', 'sent', 'deferred', 'failed')
            ),
            attempts integer NOT NULL DEFAULT 0,
            ambiguous boolean NOT NULL DEFAULT false,
            transient boolean NOT NULL DEFAULT false,
            recipients jsonb NOT NULL DEFAULT '{}',
            replies jsonb NOT NULL DEFAULT '{}',
            reply_code integer,
            reply_text text,
            error text,
            worker text,
            first_attempt_at timestamptz,
            next_attempt_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX mailer_messages_by_batch ON mailer_messages (batch_id, state);
        CREATE INDEX mailer_messages_by_state ON mailer_messages (state);
        CREATE INDEX mailer_messages_by_message_id ON mailer_messages (message_id);
        """,
    ),
    (2, "rate limits shared by the workers", RATE_LIMITS_SQL),
    (
        3,
        "each message's Date and bytes digest, so every attempt sends the same",
        # Nullable: a row enqueued before this migration gets its Date at its
        # first attempt (store.record_starting), still before any SMTP command;
        # the digest (SHA-256 of the bytes last attempted) is set by attempts.
        "ALTER TABLE mailer_messages ADD COLUMN date text, ADD COLUMN digest text;",
    ),
)
LATEST = MIGRATIONS[-1][0]

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS mailer_schema (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def _has_table(connection: Connection, name: str) -> bool:
    cursor = await connection.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    row = await cursor.fetchone()
    return bool(row and row[0])


async def applied_version(connection: Connection) -> int:
    """Return the newest mailer migration applied to the database (0: none)."""
    if not await _has_table(connection, "mailer_schema"):
        return 0
    cursor = await connection.execute("SELECT max(version) FROM mailer_schema")
    row = await cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def apply_schema(connection: Connection) -> list[str]:
    """Create whatever is missing; return a line for each thing done.

    Args:
        connection: An open connection, not inside a transaction.
    """
    from procrastinate.schema import SchemaManager

    done: list[str] = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", [INIT_LOCK])
        if not await _has_table(connection, "procrastinate_jobs"):
            # procrastinate's own SQL, as its `schema --apply` runs it.
            await connection.execute(SchemaManager.get_schema())
            done.append("created procrastinate's schema (jobs, workers, events)")
        await connection.execute(_VERSION_TABLE)
        current = await applied_version(connection)
        if current > LATEST:
            raise QueueError(_newer(current))
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            await connection.execute(sql.encode())
            await connection.execute(
                "INSERT INTO mailer_schema (version, description) VALUES (%s, %s)",
                [version, description],
            )
            done.append(f"applied mailer migration {version}: {description}")
    return done


def _newer(version: int) -> str:
    return (
        f"the queue database is at mailer schema version {version}, newer than "
        f"this mailer knows ({LATEST}): upgrade mailer on this host"
    )


async def check_schema(connection: Connection) -> None:
    """Raise unless the database has exactly the tables this mailer uses.

    Raises:
        QueueError: ``mailer queue init`` has not run (or not since an
            upgrade), or a newer mailer migrated the database.
    """
    version = await applied_version(connection)
    if version > LATEST:
        raise QueueError(_newer(version))
    if version < LATEST or not await _has_table(connection, "procrastinate_jobs"):
        raise QueueError(
            "the queue database has no (or an older) mailer schema: run "
            "`mailer queue init` first"
        )
