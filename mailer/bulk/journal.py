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

The journal is one file at rest. A run takes an exclusive ``flock`` on that
file itself (so a symlink, a hard link or another spelling of the path meets
the same lock), records a run token in it and makes sure the token is in the
main file, not only in its write-ahead log (``FILE-wal``). An orderly end
(finished, stopped, or failed) settles what is left, removes the token and
folds the log into the file. After a crash the log holds the last commits:
a journal whose token is still there but whose ``-wal`` is missing was copied
or moved without it, and is refused rather than resumed from stale records.

Each message also records the fingerprint of its row (``identity.py``), and
each attempt that starts sending its content is noted in the content log
(``contentlog.py``), so that after a crash only the messages whose content
may have left count as ambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import json
import os
import secrets
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mailer.bulk.contentlog import ContentLog, boot_id, log_path, read_content_log
from mailer.exceptions import JournalError
from mailer.replies import RecipientStatus, Reply

# Changes to the schema are additive (new nullable columns in ADDED_COLUMNS, new
# meta keys), so every journal of version 1 stays readable both ways.
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
    fingerprint TEXT,
    date TEXT,
    digest TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_state ON messages (state);
"""
# Columns added since version 1 was first written: a journal that lacks one
# gets it when it is opened (NULL in its existing rows: a row without its
# fingerprint is matched by address; one without its Date resumes with a new
# Date, as before; one without its digest is resent without the comparison).
ADDED_COLUMNS = {"fingerprint": "TEXT", "date": "TEXT", "digest": "TEXT"}


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
        dedupe: Whether rows repeating an earlier address are skipped (they
            have no entry, so a resume must skip them too).
    """

    template: str
    source: str
    fingerprint: str
    dedupe: bool = False


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
    fingerprint: str | None = None  # of the row (None in older journals)
    date: str | None = None  # the Date header, recorded with the Message-ID
    # SHA-256 of the bytes the first attempt sent, so a resend can prove it
    # sends the same message (None in older journals, and before any attempt).
    digest: str | None = None

    @property
    def is_done(self) -> bool:
        """Return whether a resume leaves this message alone (sent or refused)."""
        return self.state is JournalState.SENT or (
            self.state is JournalState.FAILED and not self.transient
        )

    @property
    def may_have_arrived(self) -> bool:
        """Return whether a copy may already be with a recipient (so a resend is one).

        Caught ``sending``, ambiguous, or accepted for some recipients: a
        resend must then be the same bytes, or not go.
        """
        return (
            self.state is JournalState.SENDING
            or self.ambiguous
            or RecipientStatus.ACCEPTED in self.recipients.values()
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
        fingerprint=row["fingerprint"] if "fingerprint" in row.keys() else None,  # noqa: SIM118
        digest=row["digest"] if "digest" in row.keys() else None,  # noqa: SIM118
    )


class Journal:
    """A delivery journal file, open for one run of its batch (use ``Journal.open``)."""

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        lock: int,
        meta: dict[str, str],
    ) -> None:
        self.path = path
        self._connection = connection
        self._executor = executor
        self._lock = lock
        self._reader: sqlite3.Connection | None = None
        self._previous_run = meta.get("run", "")
        self._run = ""
        self._content: ContentLog | None = None

    @classmethod
    async def open(
        cls, path: Path | str, identity: BatchIdentity
    ) -> tuple[Journal, bool]:
        """Open (or create) the journal at ``path`` for the batch ``identity``.

        A new journal is empty until ``create`` fills it; an existing one is
        checked against ``identity``.

        Returns:
            The journal, and whether it already existed (a resume).

        Raises:
            JournalError: The path cannot hold a journal (a missing folder, a
                directory, no write permission), the file is not a journal,
                belongs to another batch, is in use by another process, or lost
                its write-ahead log.
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
        lock = _open_locked(path)
        try:
            real = path.resolve()
            # Looked at before SQLite opens the file (and makes a new, empty log).
            has_log = Path(f"{real}-wal").exists()
            try:
                connection = sqlite3.connect(
                    real, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise _unusable(path, exc) from None
            connection.row_factory = sqlite3.Row
            try:
                meta = _prepare(connection, path, identity, has_log=has_log)
            except sqlite3.DatabaseError as exc:
                connection.close()
                raise JournalError(
                    f"{path}: not a mailer journal ({exc})", path=str(path)
                ) from None
            except BaseException:
                connection.close()
                raise
        except BaseException:
            os.close(lock)
            raise
        return cls(path, connection, executor, lock, meta), bool(meta)

    async def _run_db(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.Error as exc:
            # Disk full, read-only file...: what cannot be recorded must not be
            # sent, so this stops the batch (see MessageClient._attempt).
            raise JournalError(
                f"{self.path}: cannot use the journal: {exc}", path=str(self.path)
            ) from exc

    async def create(
        self,
        identity: BatchIdentity,
        rows: Iterable[tuple[int, int, str, str]],
    ) -> None:
        """Fill a new journal: its identity and every message ``pending``, at once.

        Args:
            identity: The batch.
            rows: ``(position, line, email, fingerprint)`` of each message. If
                reading them raises, nothing is kept: the file stays an empty
                journal, and the error is raised.
        """
        now = time.time()

        def create() -> None:
            with SQLiteTransaction(self._connection):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self._connection.execute(statement)
                _write_meta(self._connection, identity)
                self._connection.executemany(
                    "INSERT INTO messages"
                    " (position, line, email, state, updated_at, fingerprint)"
                    " VALUES (?, ?, ?, 'pending', ?, ?)",
                    ((p, line, email, now, fp) for p, line, email, fp in rows),
                )

        await self._run_db(create)

    async def begin_run(self) -> tuple[int, int]:
        """Start this process's run: settle what a crashed run left, then mark the file.

        Every message left ``sending`` by the previous run becomes ``deferred``:
        ambiguous if its content may have left (see ``contentlog.py``), plain
        otherwise. Then a new run token goes into the main file (not only its
        write-ahead log), and a new content log is started.

        Returns:
            How many ``sending`` messages were ambiguous, and how many were
            proven cut short before their content.
        """
        started = read_content_log(log_path(self.path), self._previous_run)
        settled = await self._settle(started)
        self._run = secrets.token_hex(8)
        boot = boot_id()

        def mark() -> None:
            with SQLiteTransaction(self._connection):
                self._connection.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("run", self._run), ("boot", boot)],
                )
            _checkpoint(self._connection)

        await self._run_db(mark)
        try:
            self._content = ContentLog(log_path(self.path), self._run, boot)
        except OSError as exc:
            raise JournalError(
                f"{self.path}: cannot write its content log: {exc.strerror}",
                path=str(self.path),
            ) from None
        return settled

    def mark_content(self, position: int, attempt: int) -> None:
        """Note that attempt ``attempt`` of message ``position`` starts its content.

        Raises:
            JournalError: The note cannot be written; the content must not go.
        """
        if self._content is None:
            return
        try:
            self._content.mark(position, attempt)
        except OSError as exc:
            raise JournalError(
                f"{self.path}: cannot write its content log: {exc.strerror}",
                path=str(self.path),
            ) from None

    async def _settle(
        self, started: frozenset[tuple[int, int]] | None
    ) -> tuple[int, int]:
        """Turn ``sending`` messages into ``deferred`` ones, ambiguous unless proven."""

        def update() -> tuple[int, int]:
            rows = self._connection.execute(
                "SELECT position, attempts FROM messages WHERE state = 'sending'"
            ).fetchall()
            cut: list[tuple[str, float, int]] = []
            doubt: list[tuple[str, float, int]] = []
            now = time.time()
            for position, attempts in rows:
                if started is not None and (position, attempts) not in started:
                    cut.append((CUT_BEFORE_CONTENT, now, position))
                else:
                    doubt.append((IN_DOUBT, now, position))
            with SQLiteTransaction(self._connection):
                self._connection.executemany(
                    "UPDATE messages SET state = 'deferred', ambiguous = 1,"
                    " transient = 1, error = ?, updated_at = ? WHERE position = ?",
                    doubt,
                )
                self._connection.executemany(
                    "UPDATE messages SET state = 'deferred', transient = 1,"
                    " error = ?, updated_at = ? WHERE position = ?",
                    cut,
                )
            return len(doubt), len(cut)

        return await self._run_db(update)

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

        return await self._run_db(count)

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
            entry.digest,
            entry.position,
        )

        def write() -> None:
            with SQLiteTransaction(self._connection):
                self._connection.execute(
                    "UPDATE messages SET state = ?, message_id = ?, attempts = ?,"
                    " ambiguous = ?, transient = ?, recipients = ?, replies = ?,"
                    " reply_code = ?, reply_text = ?, error = ?, next_attempt_at = ?,"
                    " updated_at = ?, date = ?, digest = ? WHERE position = ?",
                    values,
                )

        await self._run_db(write)

    async def aclose(self) -> None:
        """End the run in order: settle, fold the log into the file, unlock.

        Messages still ``sending`` (cut off by an error) are settled with this
        run's own content log; then the run token is removed and the
        write-ahead log checkpointed, so that the journal is one file again.
        If the database cannot be written, it is closed as it is (a crash,
        as far as the next run can tell; its records are consistent).
        """
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        content, self._content = self._content, None
        is_settled = False
        if self._run:
            try:
                await self._settle(read_content_log(log_path(self.path), self._run))

                def unmark() -> None:
                    with SQLiteTransaction(self._connection):
                        self._connection.execute(
                            "DELETE FROM meta WHERE key IN ('run', 'boot')"
                        )
                    _checkpoint(self._connection)

                await self._run_db(unmark)
                is_settled = True
            except JournalError:
                pass  # left as after a crash: the next run settles it

        def to_rest() -> None:
            # Out of WAL mode at rest: one file, which readers (mailer status,
            # sqlite3) open without making a -wal and -shm beside it. Skipped
            # if a reader holds it right now (it stays in WAL mode, consistent).
            with contextlib.suppress(sqlite3.OperationalError):
                self._connection.execute("PRAGMA journal_mode=DELETE")

        def close() -> None:
            self._connection.close()
            os.close(self._lock)

        try:
            if is_settled:
                await self._run_db(to_rest)
            await self._run_db(close)
        finally:
            self._executor.shutdown(wait=True)
            if content is not None:
                content.close(remove=is_settled)


IN_DOUBT = (
    "in flight when the previous run ended, its content sent: it may have "
    "been delivered"
)
CUT_BEFORE_CONTENT = (
    "in flight when the previous run ended, before its content was sent: not delivered"
)


class SQLiteTransaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (not an SMTP transaction)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._connection.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _checkpoint(connection: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the main file and empty it.

    A reader (``mailer status``) may hold it back for a moment: try a few
    times, then go on (the records are safe in the log either way).
    """
    for _ in range(20):
        [busy, _log, _done] = connection.execute(
            "PRAGMA wal_checkpoint(TRUNCATE)"
        ).fetchone()
        if not busy:
            return
        time.sleep(0.05)


def check_journal_path(path: Path | str) -> None:
    """Fail early, before any row is read, if ``path`` cannot hold a journal.

    Nothing is created or changed.

    Raises:
        JournalError: The folder is missing, the path is a directory or not a
            regular file, or the file (or, for a new journal, its folder)
            cannot be written.
    """
    path = Path(path)
    if path.exists():
        os.close(_open_file(path, create=False))
        return
    folder = path.resolve().parent
    if not folder.is_dir():
        raise _path_error(path, errno.ENOENT)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _path_error(path, errno.EACCES)


def _open_file(path: Path, *, create: bool) -> int:
    """Open the journal file itself for writing; refuse anything else."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
    try:
        # O_NONBLOCK: opening a FIFO given by mistake must not wait for a writer.
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as exc:
        raise _path_error(path, exc.errno) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise JournalError(
            f"--journal {path}: not a regular file; give the path of a file "
            "(it is created if missing)",
            path=str(path),
        )
    return fd


def _path_error(path: Path, code: int | None) -> JournalError:
    if code == errno.EISDIR:
        problem = "is a directory; give the path of a file (it is created if missing)"
    elif code in (errno.ENOENT, errno.ENOTDIR):
        problem = (
            f"the folder {path.parent} does not exist (or is not a folder); "
            "create it first"
        )
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        problem = (
            "cannot be written here (permission denied, or a read-only place); "
            "choose a writable one"
        )
    else:
        problem = f"cannot be opened ({os.strerror(code or 0)})"
    return JournalError(f"--journal {path}: {problem}", path=str(path))


def _unusable(path: Path, exc: sqlite3.Error) -> JournalError:
    return JournalError(
        f"--journal {path}: cannot be used as a database ({exc}); check that "
        "its folder is writable",
        path=str(path),
    )


def _lost_log(path: Path) -> JournalError:
    return JournalError(
        f"{path}: the run that used it did not end cleanly and its write-ahead "
        f"log ({path.name}-wal) is missing, so its last records may be lost and "
        f"a resume could send again what was sent; put {path.name}-wal back "
        f"beside it (copy {path.name}, {path.name}-wal and {path.name}-shm "
        "together), or see 'Delivery guarantees' in the README",
        path=str(path),
    )


def _open_locked(path: Path) -> int:
    """Open the journal file and hold an exclusive lock on it until closed.

    The lock is on the file itself (``flock`` on its inode), so every path to
    it, a symlink, a hard link, ``./j.db`` or an absolute one, meets the
    same lock. (SQLite's own locks are POSIX record locks, independent of it.)
    """
    fd = _open_file(path, create=True)
    if sys.platform == "win32":  # pragma: no cover - flock is POSIX only
        return fd
    import fcntl  # here: the module does not exist on Windows

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JournalError(
            f"{path}: in use by another mailer process (wait for it to end)",
            path=str(path),
        ) from None
    return fd


def _prepare(
    connection: sqlite3.Connection,
    path: Path,
    identity: BatchIdentity,
    *,
    has_log: bool,
) -> dict[str, str]:
    """Set the journal's modes and check it; return its meta ({} if it is new)."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    tables = {
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    if "meta" not in tables:
        if tables:
            raise JournalError(f"{path}: not a mailer journal", path=str(path))
        return {}  # new, or left empty by a creation that failed
    meta = read_meta(connection)
    _check_identity(meta, path, identity)
    if meta.get("run") and not has_log:
        raise _lost_log(path)
    _add_missing_columns(connection)
    return meta


def _write_meta(connection: sqlite3.Connection, identity: BatchIdentity) -> None:
    connection.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [
            ("version", JOURNAL_VERSION),
            ("template", identity.template),
            ("source", identity.source),
            ("fingerprint", identity.fingerprint),
            ("dedupe", "1" if identity.dedupe else "0"),
            ("created_at", str(time.time())),
        ],
    )


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    columns = {row[1] for row in connection.execute("PRAGMA table_info(messages)")}
    for name, kind in ADDED_COLUMNS.items():
        if name not in columns:
            connection.execute(f"ALTER TABLE messages ADD COLUMN {name} {kind}")


def read_meta(connection: sqlite3.Connection) -> dict[str, str]:
    """Return the journal's meta table (version, template, source...)."""
    return {row[0]: row[1] for row in connection.execute("SELECT key, value FROM meta")}


def _check_identity(meta: dict[str, str], path: Path, identity: BatchIdentity) -> None:
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
    if (meta.get("dedupe", "0") == "1") != identity.dedupe:
        mode = "with" if meta.get("dedupe") == "1" else "without"
        raise JournalError(
            f"{path}: its batch was started {mode} --dedupe; run it "
            f"{mode} --dedupe again to resume it",
            path=str(path),
        )


@dataclass(slots=True)
class JournalSummary:
    """What ``mailer status`` reads from a journal: its identity, counts, failures.

    Attributes:
        sending_started: Of the ``sending`` messages, how many had started
            their content (the content log of the run that left them), or
            None when that cannot be known (they count as ambiguous).
        log_missing: The run that used the journal did not end cleanly and its
            write-ahead log is missing: the counts may lack its last records.
    """

    meta: dict[str, str]
    counts: dict[JournalState, int]
    ambiguous: int
    failures: list[JournalEntry]
    sending_started: int | None = None
    log_missing: bool = False


def read_summary(path: Path | str) -> JournalSummary:
    """Read a journal's counts by state and its failed messages, without its lock.

    Raises:
        JournalError: The file is missing or not a journal.
    """
    path = Path(path)
    has_log = Path(f"{path.resolve()}-wal").exists()  # before a reader makes one
    connection = open_read_only(path)
    try:
        meta = read_meta(connection)
        sending = [
            (row[0], row[1])
            for row in connection.execute(
                "SELECT position, attempts FROM messages WHERE state = 'sending'"
            )
        ]
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
    started = read_content_log(log_path(path), meta.get("run", ""))
    return JournalSummary(
        meta=meta,
        counts={state: counts.get(state.value, 0) for state in JournalState},
        ambiguous=ambiguous,
        failures=failures,
        sending_started=None
        if started is None
        else sum(1 for pair in sending if pair in started),
        log_missing=bool(meta.get("run")) and not has_log,
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
