"""Record each message's delivery state in SQLite, so a batch survives a crash.

One row per message of the batch, inserted ``pending`` before anything is
sent. Each attempt is committed before its first SMTP command (``sending``,
with its Message-ID) and again as soon as it ends (``sent`` after the 250,
``deferred`` with the time of the next attempt, or ``failed`` with the
reason), one transaction each: a crash can leave at most the transactions in
flight (``MAILER_CONCURRENCY``) in doubt, and those are the rows still marked
``sending``.

The database runs in WAL mode with ``synchronous=FULL``: a commit is on disk
before the next SMTP command. SQLite's commits are atomic, so even a
``kill -9`` in the middle of one leaves a consistent journal. All database
work runs on one dedicated thread, so a slow disk does not stall the event
loop (and its SMTP timeouts).
"""

from __future__ import annotations

import asyncio
import enum
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from mailer.exceptions import JournalError
from mailer.replies import RecipientStatus, Reply

JOURNAL_VERSION = "1"
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    position INTEGER PRIMARY KEY,
    line INTEGER NOT NULL,
    email TEXT NOT NULL,
    state TEXT NOT NULL CHECK (
        state IN ('pending', 'sending', 'sent', 'failed', 'deferred')
    ),
    message_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    ambiguous INTEGER NOT NULL DEFAULT 0,
    transient INTEGER NOT NULL DEFAULT 0,
    recipients TEXT NOT NULL DEFAULT '{}',
    replies TEXT NOT NULL DEFAULT '{}',
    reply_code INTEGER,
    reply_text TEXT,
    error TEXT,
    next_attempt_at REAL,
    updated_at REAL NOT NULL,
    date TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_state ON messages (state);
"""


class JournalState(enum.StrEnum):
    """Where a message stands in the journal."""

    PENDING = "pending"  # not tried yet
    SENDING = "sending"  # an attempt is (or was, at a crash) in flight
    SENT = "sent"  # the server accepted it for every recipient it did not refuse
    FAILED = "failed"  # given up; ``transient`` says whether a resume retries it
    DEFERRED = "deferred"  # waiting for its next attempt


@dataclass(frozen=True, slots=True)
class BatchIdentity:
    """What a journal belongs to; a resume must match it.

    Attributes:
        template: The template set name.
        source: A label for the recipients (the file path), for messages.
        fingerprint: A digest of every recipient row, so an edited file is
            noticed.
    """

    template: str
    source: str
    fingerprint: str


@dataclass(slots=True)
class JournalEntry:
    """One message as the journal last recorded it."""

    position: int
    line: int
    email: str
    state: JournalState
    message_id: str | None = None
    attempts: int = 0
    ambiguous: bool = False
    transient: bool = False
    recipients: dict[str, RecipientStatus] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)
    reply: Reply | None = None
    error: str | None = None
    next_attempt_at: float | None = None
    date: str | None = None  # the Date header, recorded with the Message-ID

    @property
    def is_done(self) -> bool:
        """Return whether a resume leaves this message alone (sent or refused)."""
        return self.state is JournalState.SENT or (
            self.state is JournalState.FAILED and not self.transient
        )

    @property
    def settled(self) -> frozenset[str]:
        """Return the recipients that need nothing more (accepted or rejected)."""
        return frozenset(
            r for r, s in self.recipients.items() if s is not RecipientStatus.DEFERRED
        )


def entry_from_row(row: sqlite3.Row) -> JournalEntry:
    """Return the entry a ``messages`` row holds."""
    replies = {
        r: Reply(code, text) for r, (code, text) in json.loads(row["replies"]).items()
    }
    reply = None
    if row["reply_code"] is not None:
        reply = Reply(row["reply_code"], row["reply_text"] or "")
    return JournalEntry(
        position=row["position"],
        line=row["line"],
        email=row["email"],
        state=JournalState(row["state"]),
        message_id=row["message_id"],
        date=row["date"] if "date" in row.keys() else None,  # noqa: SIM118
        attempts=row["attempts"],
        ambiguous=bool(row["ambiguous"]),
        transient=bool(row["transient"]),
        recipients={
            r: RecipientStatus(s) for r, s in json.loads(row["recipients"]).items()
        },
        replies=replies,
        reply=reply,
        error=row["error"],
        next_attempt_at=row["next_attempt_at"],
    )


class Journal:
    """A delivery journal file, open for one batch (use ``Journal.open``)."""

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        lock: IO[str] | None,
    ) -> None:
        self.path = path
        self._connection = connection
        self._executor = executor
        self._lock = lock
        self._reader: sqlite3.Connection | None = None

    @classmethod
    async def open(
        cls, path: Path | str, identity: BatchIdentity
    ) -> tuple[Journal, bool]:
        """Open (or create) the journal at ``path`` for the batch ``identity``.

        Returns:
            The journal, and whether it already existed (a resume).

        Raises:
            JournalError: The file is not a journal, belongs to another batch,
                or is in use by another process.
        """
        path = Path(path)
        executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mailer-journal"
        )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                executor, cls._open_sync, path, identity, executor
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise

    @classmethod
    def _open_sync(
        cls, path: Path, identity: BatchIdentity, executor: ThreadPoolExecutor
    ) -> tuple[Journal, bool]:
        existed = path.is_file() and path.stat().st_size > 0
        lock = _lock(path)
        try:
            connection = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False
            )
            connection.row_factory = sqlite3.Row
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                if existed:
                    _check_identity(connection, path, identity)
                    _add_date_column(connection)
                else:
                    connection.executescript(SCHEMA)
                    _write_meta(connection, identity)
            except sqlite3.DatabaseError as exc:
                connection.close()
                raise JournalError(
                    f"{path}: not a mailer journal ({exc})", path=str(path)
                ) from None
            except BaseException:
                connection.close()
                raise
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        return cls(path, connection, executor, lock), existed

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.Error as exc:
            # Disk full, read-only file...: what cannot be recorded must not be
            # sent, so this stops the batch (see MessageClient._attempt).
            raise JournalError(
                f"{self.path}: cannot use the journal: {exc}", path=str(self.path)
            ) from exc

    async def add_messages(self, rows: Iterable[tuple[int, int, str]]) -> None:
        """Record messages as ``pending``: ``(position, line, email)`` each, once."""
        now = time.time()

        def insert() -> None:
            with SQLiteTransaction(self._connection):
                self._connection.executemany(
                    "INSERT OR IGNORE INTO messages"
                    " (position, line, email, state, updated_at)"
                    " VALUES (?, ?, ?, 'pending', ?)",
                    ((p, line, email, now) for p, line, email in rows),
                )

        await self._run(insert)

    def iter_entries(self, chunk: int = 500) -> Iterator[JournalEntry]:
        """Yield every entry in batch order, ``chunk`` rows per query.

        It reads on the caller's thread through its own connection, one short
        query per chunk: memory stays flat however large the batch, and no
        long read holds back the WAL checkpoint while the batch writes.
        """
        if self._reader is None:
            self._reader = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True
            )
            self._reader.row_factory = sqlite3.Row
        after = -1
        while True:
            rows = self._reader.execute(
                "SELECT * FROM messages WHERE position > ? ORDER BY position LIMIT ?",
                (after, chunk),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield entry_from_row(row)
            after = rows[-1]["position"]

    async def counts(self) -> dict[tuple[JournalState, bool], int]:
        """Return how many messages are in each (state, transient) pair."""

        def count() -> dict[tuple[JournalState, bool], int]:
            rows = self._connection.execute(
                "SELECT state, transient, COUNT(*) FROM messages"
                " GROUP BY state, transient"
            )
            return {(JournalState(s), bool(t)): n for s, t, n in rows}

        return await self._run(count)

    async def mark_in_doubt(self, reason: str) -> int:
        """Turn every ``sending`` message into an ambiguous ``deferred`` one.

        A message still ``sending`` when a run starts was in flight when the
        previous run ended: it may have been delivered.

        Returns:
            How many messages were in doubt.
        """

        def update() -> int:
            with SQLiteTransaction(self._connection):
                cursor = self._connection.execute(
                    "UPDATE messages SET state = 'deferred', ambiguous = 1,"
                    " transient = 1, error = ?, updated_at = ?"
                    " WHERE state = 'sending'",
                    (reason, time.time()),
                )
            return cursor.rowcount

        return await self._run(update)

    async def record(self, entry: JournalEntry) -> None:
        """Write ``entry`` as the message's state, in its own committed transaction."""
        values = (
            entry.state.value,
            entry.message_id,
            entry.attempts,
            int(entry.ambiguous),
            int(entry.transient),
            json.dumps({r: s.value for r, s in entry.recipients.items()}),
            json.dumps({r: [x.code, x.text] for r, x in entry.replies.items()}),
            entry.reply.code if entry.reply else None,
            entry.reply.text if entry.reply else None,
            entry.error,
            entry.next_attempt_at,
            time.time(),
            entry.date,
            entry.position,
        )

        def write() -> None:
            with SQLiteTransaction(self._connection):
                self._connection.execute(
                    "UPDATE messages SET state = ?, message_id = ?, attempts = ?,"
                    " ambiguous = ?, transient = ?, recipients = ?, replies = ?,"
                    " reply_code = ?, reply_text = ?, error = ?, next_attempt_at = ?,"
                    " updated_at = ?, date = ? WHERE position = ?",
                    values,
                )

        await self._run(write)

    async def aclose(self) -> None:
        """Close the database and release the lock."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

        def close() -> None:
            self._connection.close()
            if self._lock is not None:
                self._lock.close()

        try:
            await self._run(close)
        finally:
            self._executor.shutdown(wait=True)


class SQLiteTransaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (not an SMTP transaction)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._connection.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _lock(path: Path) -> IO[str] | None:
    """Hold an exclusive lock on ``path.lock`` for the life of the journal."""
    if sys.platform == "win32":  # pragma: no cover - flock is POSIX only
        return None
    import fcntl  # here: the module does not exist on Windows

    lock_path = path.with_name(path.name + ".lock")
    handle = lock_path.open("a")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise JournalError(
            f"{path}: in use by another mailer process (wait for it to end)",
            path=str(path),
        ) from None
    return handle


def _write_meta(connection: sqlite3.Connection, identity: BatchIdentity) -> None:
    with SQLiteTransaction(connection):
        connection.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [
                ("version", JOURNAL_VERSION),
                ("template", identity.template),
                ("source", identity.source),
                ("fingerprint", identity.fingerprint),
                ("created_at", str(time.time())),
            ],
        )


def read_meta(connection: sqlite3.Connection) -> dict[str, str]:
    """Return the journal's meta table (version, template, source...)."""
    return {row[0]: row[1] for row in connection.execute("SELECT key, value FROM meta")}


def _check_identity(
    connection: sqlite3.Connection, path: Path, identity: BatchIdentity
) -> None:
    meta = read_meta(connection)
    if meta.get("version") != JOURNAL_VERSION:
        raise JournalError(
            f"{path}: not a mailer journal (or from another version)", path=str(path)
        )
    if meta.get("template") != identity.template:
        raise JournalError(
            f"{path} is the journal of another batch: template "
            f"{meta.get('template')!r}, not {identity.template!r}; "
            "use a new journal file for this batch",
            path=str(path),
        )
    if meta.get("fingerprint") != identity.fingerprint:
        started = meta.get("source")
        # The same name twice told nothing: say which case this is.
        what = (
            f"{started} changed since the journal was started"
            if started == identity.source
            else f"it was started for the recipients {started}, not {identity.source}"
        )
        raise JournalError(
            f"{path} is the journal of another batch: {what}; use a new journal "
            "file for this batch (or the original file to resume it)",
            path=str(path),
        )


def _add_date_column(connection: sqlite3.Connection) -> None:
    # Journals written before the Date was recorded (same version otherwise)
    # get the column; their rows resume with a new Date, as they did before.
    columns = {row[1] for row in connection.execute("PRAGMA table_info(messages)")}
    if "date" not in columns:
        connection.execute("ALTER TABLE messages ADD COLUMN date TEXT")


@dataclass(slots=True)
class JournalSummary:
    """What ``mailer status`` reads from a journal: its identity, counts, failures."""

    meta: dict[str, str]
    counts: dict[JournalState, int]
    ambiguous: int
    failures: list[JournalEntry]


def read_summary(path: Path | str) -> JournalSummary:
    """Read a journal's counts by state and its failed messages, without its lock.

    Raises:
        JournalError: The file is missing or not a journal.
    """
    connection = open_read_only(path)
    try:
        meta = read_meta(connection)
        counts = dict(
            connection.execute("SELECT state, COUNT(*) FROM messages GROUP BY state")
        )
        [(ambiguous,)] = connection.execute(
            "SELECT COUNT(*) FROM messages WHERE ambiguous = 1"
        )
        failures = [
            entry_from_row(row)
            for row in connection.execute(
                "SELECT * FROM messages WHERE state = 'failed' ORDER BY position"
            )
        ]
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"{path}: cannot read it: {exc}", path=str(path)) from None
    finally:
        connection.close()
    return JournalSummary(
        meta=meta,
        counts={state: counts.get(state.value, 0) for state in JournalState},
        ambiguous=ambiguous,
        failures=failures,
    )


def open_read_only(path: Path | str) -> sqlite3.Connection:
    """Open a journal for reading (``mailer status``) without taking its lock.

    Raises:
        JournalError: The file is missing or not a journal.
    """
    path = Path(path)
    if not path.is_file():
        raise JournalError(f"{path}: no such journal file", path=str(path))
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        meta = read_meta(connection)
    except sqlite3.DatabaseError:
        connection.close()
        raise JournalError(f"{path}: not a mailer journal", path=str(path)) from None
    if meta.get("version") != JOURNAL_VERSION:
        connection.close()
        raise JournalError(f"{path}: not a mailer journal", path=str(path))
    return connection
