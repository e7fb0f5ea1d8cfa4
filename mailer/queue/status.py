"""Describe the queue for ``mailer status --batch ID`` and ``--queue``.

Counts by state come from ``mailer_messages``, which every worker writes, so
the figures are those of all workers on all hosts. A batch (or the queue) is
complete when every message is sent; it is finished, and not complete, when
nothing is left to do but some messages failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailer.bulk.journal import JournalEntry, JournalState
from mailer.config.settings import MailerSettings
from mailer.exceptions import QueueError
from mailer.queue import store
from mailer.queue.database import connect, database_errors, queue_dsn
from mailer.queue.schema import check_schema

if TYPE_CHECKING:
    from mailer.queue.database import Connection

SHOWN_FAILURES = 50
ACTIVE = (JournalState.PENDING, JournalState.SENDING, JournalState.DEFERRED)


@dataclass(slots=True)
class QueueStatus:
    """What the queue database says about one batch, or about everything.

    Attributes:
        title: The first line (``batch 7: template 'welcome', ...``).
        counts: Messages per state (every state listed).
        ambiguous: Messages that may have been delivered twice.
        failures: Failed messages (the first ``SHOWN_FAILURES``).
        workers: Workers whose heartbeat is recent.
        jobs: procrastinate jobs by status (todo, doing...).
    """

    title: str
    counts: dict[JournalState, int]
    ambiguous: int
    failures: list[JournalEntry] = field(default_factory=list)
    workers: int = 0
    jobs: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Return how many messages there are."""
        return sum(self.counts.values())

    @property
    def is_finished(self) -> bool:
        """Return whether no message is waiting or in flight."""
        return not any(self.counts[state] for state in ACTIVE)

    @property
    def is_complete(self) -> bool:
        """Return whether every message was sent."""
        return self.counts[JournalState.SENT] == self.total

    def lines(self) -> list[str]:
        """Return the report ``mailer status`` prints."""
        counts = ", ".join(
            f"{self.counts[state]} {state.value}" for state in JournalState
        )
        out = [self.title, counts]
        if self.is_complete:
            out.append("complete: every message was sent")
        elif self.is_finished:
            out.append(
                f"finished: {self.counts[JournalState.FAILED]} failed, nothing "
                "left to send"
            )
        else:
            left = sum(self.counts[state] for state in ACTIVE)
            jobs = ", ".join(f"{n} {status}" for status, n in sorted(self.jobs.items()))
            out.append(
                f"in progress: {left} message(s) to go; {self.workers} worker(s) "
                f"alive; jobs: {jobs or 'none'}"
            )
        out.append(
            f"{self.ambiguous} ambiguous (may have been delivered twice, same "
            "Message-ID)"
        )
        for entry in self.failures:
            where = (
                f"line {entry.line} " if entry.line else f"message {entry.position} "
            )
            out.append(
                f"failed {where}{entry.email}: {entry.error} "
                f"({entry.attempts} attempt(s))"
            )
        failed = self.counts[JournalState.FAILED]
        if failed > len(self.failures):
            out.append(f"... and {failed - len(self.failures)} more failures")
        return out


async def _counts(
    connection: Connection, batch_id: int | None
) -> tuple[dict[JournalState, int], int]:
    cursor = await connection.execute(
        "SELECT state, count(*), count(*) FILTER (WHERE ambiguous)"
        " FROM mailer_messages WHERE (%s::bigint IS NULL OR batch_id = %s)"
        " GROUP BY state",
        [batch_id, batch_id],
    )
    counts = dict.fromkeys(JournalState, 0)
    ambiguous = 0
    for state, count, doubtful in await cursor.fetchall():
        counts[JournalState(state)] = int(count)
        ambiguous += int(doubtful)
    return counts, ambiguous


async def _failures(connection: Connection, batch_id: int | None) -> list[JournalEntry]:
    cursor = await connection.execute(
        f"SELECT {store.COLUMNS} FROM mailer_messages"  # noqa: S608 - a constant
        " WHERE state = 'failed' AND (%s::bigint IS NULL OR batch_id = %s)"
        " ORDER BY id LIMIT %s",
        [batch_id, batch_id, SHOWN_FAILURES],
    )
    return [store.row_from_database(row).entry for row in await cursor.fetchall()]


async def _activity(
    connection: Connection, heartbeat: float
) -> tuple[int, dict[str, int]]:
    cursor = await connection.execute(
        "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat >"
        " now() - make_interval(secs => %s)",
        [3 * heartbeat],
    )
    row = await cursor.fetchone()
    workers = int(row[0]) if row else 0
    cursor = await connection.execute(
        "SELECT status::text, count(*) FROM procrastinate_jobs"
        " WHERE queue_name = 'mailer' AND status IN ('todo', 'doing')"
        " GROUP BY status"
    )
    return workers, {str(s): int(n) for s, n in await cursor.fetchall()}


async def queue_status(
    settings: MailerSettings, *, batch_id: int | None = None
) -> QueueStatus:
    """Read the state of one batch (``batch_id``) or of the whole queue.

    Raises:
        ConfigError: ``MAILER_QUEUE_DSN`` is not set.
        QueueError: The database cannot be used, or has no such batch.
    """
    dsn = queue_dsn(settings)
    with database_errors("cannot read the queue", dsn):
        async with connect(settings, action="cannot read the queue") as connection:
            await check_schema(connection)
            if batch_id is not None:
                cursor = await connection.execute(
                    "SELECT template, source, total FROM mailer_batches WHERE id = %s",
                    [batch_id],
                )
                found = await cursor.fetchone()
                if found is None:
                    raise QueueError(f"--batch {batch_id}: no such batch in the queue")
                template, source, total = found
                title = (
                    f"batch {batch_id}: template {template!r}, recipients {source}, "
                    f"{total} message(s)"
                )
            counts, ambiguous = await _counts(connection, batch_id)
            if batch_id is None:
                title = f"queue: {sum(counts.values())} message(s)"
            failures = await _failures(connection, batch_id)
            workers, jobs = await _activity(connection, settings.queue_heartbeat)
    return QueueStatus(
        title=title,
        counts=counts,
        ambiguous=ambiguous,
        failures=failures,
        workers=workers,
        jobs=jobs,
    )
