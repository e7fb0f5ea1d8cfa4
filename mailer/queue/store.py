"""Read and write mailer's delivery state in PostgreSQL (``mailer_messages``).

One row per queued message, inserted ``pending`` with its Message-ID in the
same transaction as its job. A worker commits ``sending`` (attempts + 1)
before the attempt's first SMTP command and the outcome (``sent``,
``deferred`` with the time of its retry job, ``failed``, or back to
``pending``) as soon as it ends: the journal's guarantees
(``mailer.bulk.journal``), shared by every worker on every host.

Each row also keeps the message's Date header (written at enqueue time with
the Message-ID), so that every attempt, on any worker and after any crash,
builds the same bytes, and a DKIM signature over them is the same too; and
the SHA-256 of the bytes last attempted, so that a worker whose settings
would build other bytes (another DKIM key) never resends a message in doubt
as a different copy (``mailer.queue.observer``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailer.bulk.journal import JournalEntry, JournalState
from mailer.replies import RecipientStatus, Reply

if TYPE_CHECKING:
    from mailer.queue.database import Connection

COLUMNS = (
    "id, batch_id, line, email, message, message_id, state, attempts, ambiguous,"
    " transient, recipients, replies, reply_code, reply_text, error,"
    " next_attempt_at, first_attempt_at,"
    " coalesce(next_attempt_at <= now(), true) AS due, date, digest"
)


@dataclass(slots=True)
class QueuedMessage:
    """One row of ``mailer_messages``: a message and its delivery state.

    Attributes:
        entry: The state, as the SQLite journal keeps it (``position`` is the
            row id, ``line`` the recipients file line or 0).
        batch_id: The batch (``mailer send --queue``), or None (send_later).
        message: The message as stored (see ``mailer.queue.codec``).
        first_attempt_at: When the first attempt started (the retry deadline
            counts from it).
        next_attempt_at: When a deferred message's retry job is due.
        is_due: Whether that time has come (by the database's clock).
        date: The Date header every attempt writes (None: enqueued by a
            mailer older than schema migration 3 and never attempted).
    """

    entry: JournalEntry
    batch_id: int | None
    message: dict[str, Any]
    first_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = field(default=None)
    is_due: bool = True
    date: str | None = None

    @property
    def id(self) -> int:
        """Return the row id."""
        return self.entry.position


def _replies(raw: dict[str, Any]) -> dict[str, Reply]:
    return {r: Reply(code, text) for r, (code, text) in raw.items()}


def row_from_database(row: Sequence[Any]) -> QueuedMessage:
    """Return the QueuedMessage a row of ``COLUMNS`` holds."""
    (
        id_,
        batch_id,
        line,
        email,
        message,
        message_id,
        state,
        attempts,
        ambiguous,
        transient,
        recipients,
        replies,
        reply_code,
        reply_text,
        error,
        next_attempt_at,
        first_attempt_at,
        due,
        date,
        digest,
    ) = row
    entry = JournalEntry(
        position=id_,
        line=line or 0,
        email=email,
        state=JournalState(state),
        message_id=message_id,
        attempts=attempts,
        ambiguous=ambiguous,
        transient=transient,
        recipients={r: RecipientStatus(s) for r, s in recipients.items()},
        replies=_replies(replies),
        reply=Reply(reply_code, reply_text or "") if reply_code is not None else None,
        error=error,
        next_attempt_at=next_attempt_at.timestamp() if next_attempt_at else None,
        digest=digest,
    )
    return QueuedMessage(
        entry=entry,
        batch_id=batch_id,
        message=message,
        first_attempt_at=first_attempt_at,
        next_attempt_at=next_attempt_at,
        is_due=bool(due),
        date=date,
    )


async def insert_messages(
    connection: Connection,
    rows: Sequence[tuple[int | None, int | None, str, dict[str, Any], str, str]],
) -> list[int]:
    """Insert ``pending`` messages; return their ids, in the order given.

    Args:
        connection: In the enqueuing transaction.
        rows: ``(batch_id, line, email, encoded message, message_id, date)``
            each: ``date`` is the Date header value every attempt writes.
    """
    if not rows:
        return []
    cursor = await connection.execute(
        "INSERT INTO mailer_messages"
        " (batch_id, line, email, message, message_id, date)"
        " SELECT b, l, e, m, i, d FROM unnest("
        "%s::bigint[], %s::int[], %s::text[], %s::jsonb[], %s::text[], %s::text[]"
        ") WITH ORDINALITY AS t (b, l, e, m, i, d, n) ORDER BY n RETURNING id",
        [
            [row[0] for row in rows],
            [row[1] for row in rows],
            [row[2] for row in rows],
            [json.dumps(row[3]) for row in rows],
            [row[4] for row in rows],
            [row[5] for row in rows],
        ],
    )
    ids = [int(row[0]) for row in await cursor.fetchall()]
    # Identity values are handed out in insertion order, which ORDER BY fixed.
    return sorted(ids)


async def create_batch(connection: Connection, *, template: str, source: str) -> int:
    """Insert a batch row; return its id (the batch id users see)."""
    cursor = await connection.execute(
        "INSERT INTO mailer_batches (template, source) VALUES (%s, %s) RETURNING id",
        [template, source],
    )
    row = await cursor.fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns a row
    return int(row[0])


async def set_batch_total(connection: Connection, batch_id: int, total: int) -> None:
    """Record how many messages the batch has."""
    await connection.execute(
        "UPDATE mailer_batches SET total = %s WHERE id = %s", [total, batch_id]
    )


async def record_starting(
    connection: Connection, message_id: int, worker: str, date: str, digest: str
) -> tuple[int, float, bool]:
    """Commit ``sending`` before an attempt's first SMTP command.

    A row found ``sending`` was in flight when its worker died: the attempt
    may have delivered it, so the message becomes ambiguous.

    Args:
        connection: The job's autocommit connection.
        message_id: The row id.
        worker: This worker's name.
        date: The Date header this attempt writes: kept for the next
            attempts when the row has none yet (enqueued by an older mailer).
        digest: The SHA-256 (hex) of the bytes this attempt sends.

    Returns:
        The message's attempts so far (this one included), the seconds since
        its first attempt started (by the database's clock), and whether it
        is ambiguous now.
    """
    cursor = await connection.execute(
        "UPDATE mailer_messages SET"
        " ambiguous = ambiguous OR state = 'sending',"
        " error = CASE WHEN state = 'sending' THEN %s ELSE error END,"
        " state = 'sending', attempts = attempts + 1, worker = %s,"
        " first_attempt_at = coalesce(first_attempt_at, now()),"
        " next_attempt_at = NULL, updated_at = now(), date = coalesce(date, %s),"
        " digest = %s"
        " WHERE id = %s RETURNING attempts,"
        " extract(epoch FROM now() - first_attempt_at), ambiguous",
        [
            "in flight when its worker ended: it may have been delivered",
            worker,
            date,
            digest,
            message_id,
        ],
    )
    row = await cursor.fetchone()
    assert row is not None  # noqa: S101 - the row is locked by this worker
    return int(row[0]), float(row[1]), bool(row[2])


async def record_outcome(
    connection: Connection,
    entry: JournalEntry,
    *,
    retry_in: float | None,
) -> None:
    """Commit how an attempt ended (``entry``), in the caller's transaction.

    Args:
        connection: The connection (its transaction also defers the retry job).
        entry: The message's new state.
        retry_in: For ``deferred``: seconds until the retry job runs.
    """
    await connection.execute(
        "UPDATE mailer_messages SET state = %s, attempts = %s, ambiguous = %s,"
        " transient = %s, recipients = %s, replies = %s, reply_code = %s,"
        " reply_text = %s, error = %s,"
        " next_attempt_at = now() + make_interval(secs => %s),"
        " updated_at = now() WHERE id = %s",
        [
            entry.state.value,
            entry.attempts,
            entry.ambiguous,
            entry.transient,
            json.dumps({r: s.value for r, s in entry.recipients.items()}),
            json.dumps({r: [x.code, x.text] for r, x in entry.replies.items()}),
            entry.reply.code if entry.reply else None,
            entry.reply.text if entry.reply else None,
            entry.error,
            retry_in,
            entry.position,
        ],
    )
