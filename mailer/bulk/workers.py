"""Run a batch's check pass on every core: worker processes fill the spool.

The check pass renders, validates and prepares (serialises, signs) every row
before anything is sent (``mailer.bulk.spooled``); that is where a batch's
CPU goes, and it needs nothing from the event loop. With ``MAILER_WORKERS``
(``--workers``) above 1, or by default on a machine with several cores and
a batch of more than one chunk, this process reads the rows and hands them,
``CHUNK_ROWS`` at a time, to worker processes; each worker checks its chunk
and writes the prepared messages to that chunk's spool file. This process
takes the answers back in order, so the rows' identities (``CheckedRows``),
the bad rows and the spool's order are those of a check in one process; the
send pass then reads the spool as before, and only speaks SMTP.

What stays as it was: a bad row found by a worker stops the batch before
anything is sent (the check pass is over before the first message goes
out); memory stays flat (at most two chunks per worker are in flight); a
Ctrl-C is this process's to handle (workers ignore SIGINT and are stopped
with the pool), and ends the check within a chunk.

Workers are forked from the event loop's thread before any task is given to
them, with SIGINT and SIGTERM blocked meanwhile, so that they inherit the
loaded templates and DKIM key and never run this process's signal handlers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer.bulk.checkpass import (
    Checked,
    CheckInterruptedError,
    RowRenderer,
    check_row,
    spooled_row,
)
from mailer.bulk.identity import CheckedRows
from mailer.bulk.recipients import InvalidRow, Recipient
from mailer.bulk.spool import (
    CHUNK_ROWS,
    SPOOLED_SIZE_LIMIT,
    ByteBudget,
    ChunkWriter,
    Spool,
)
from mailer.exceptions import MailerError

if TYPE_CHECKING:
    import asyncio

    from mailer.delivery.prepare import Preparer

# The most worker processes "automatic" starts, however many cores there are.
AUTO_MAX_WORKERS = 8
# Chunks given to the pool ahead of the one awaited, per worker.
AHEAD_PER_WORKER = 2
# How often a wait for a worker looks at the batch's stop (seconds).
STOP_POLL = 0.05

Item = tuple[int, Recipient | InvalidRow]


class WorkerError(MailerError):
    """A worker process ended before it finished its rows: nothing was sent."""


def usable_cores() -> int:
    """Return how many cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(setting: int) -> int:
    """Return how many worker processes a batch's check pass uses (1: none).

    Args:
        setting: ``MAILER_WORKERS``: 0 for one per usable core (at most
            ``AUTO_MAX_WORKERS``), 1 for none, N for N.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1  # workers inherit the loaded batch: fork only
    if setting == 0:
        return min(usable_cores(), AUTO_MAX_WORKERS)
    return setting


def has_more_than(items: Iterator[Item], count: int) -> tuple[list[Item], bool]:
    """Read up to ``count + 1`` items; return them and whether there were more."""
    head = list(islice(items, count + 1))
    return head, len(head) > count


# In a worker process: what its initializer was given.
_JOB: tuple[RowRenderer, Preparer, tuple[str, ...] | None] | None = None


def _start_worker(
    job: RowRenderer, preparer: Preparer, columns: tuple[str, ...] | None
) -> None:
    """Make a freshly forked worker deaf to the batch's signals, then keep its job."""
    global _JOB  # one job per worker process
    # A Ctrl-C reaches the whole process group: the parent stops the batch
    # and the pool; a worker must neither die noisily nor write to the
    # parent's wakeup descriptor (its event loop would count a second Ctrl-C).
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    _JOB = (job, preparer, columns)


def _ready() -> int:
    """Return this worker's pid: a first task that makes the pool fork now."""
    return os.getpid()


@dataclass(frozen=True, slots=True)
class ChunkAnswer:
    """What a worker found in one chunk: its bad rows and the bytes it spooled."""

    invalid: list[tuple[int, InvalidRow]]
    used: int


# A row as it travels to a worker: plain values pickle in a tenth of the
# time a frozen dataclass takes, and this process pickles every row.
Sent = tuple[int, int, str, str, dict[str, Any]] | tuple[int, InvalidRow]


def _to_worker(item: Item) -> Sent:
    position, row = item
    if isinstance(row, InvalidRow):
        return position, row
    return position, row.line, row.email, row.name, dict(row.context)


def _from_parent(sent: Sent) -> Item:
    if len(sent) == 2:
        return sent
    position, line, email, name, context = sent
    return position, Recipient(line, email, name, context)


def _check_chunk(path: str, items: list[Sent], room: int) -> ChunkAnswer:
    """Worker: check ``items``; write each valid row's prepared message to ``path``."""
    assert _JOB is not None  # noqa: S101 - set by _start_worker
    job, preparer, columns = _JOB
    budget = ByteBudget(room)
    invalid: list[tuple[int, InvalidRow]] = []
    with ChunkWriter(Path(path), budget) as writer:
        for position, row in map(_from_parent, items):
            outcome = check_row(job.render, row, columns)
            if isinstance(outcome, InvalidRow):
                invalid.append((position, outcome))
                continue
            assert isinstance(row, Recipient)  # noqa: S101 - it rendered
            writer.write(spooled_row(position, row, outcome, preparer))
    return ChunkAnswer(invalid, room - budget.left)


class WorkerPool:
    """Worker processes, forked now, that check a batch's rows into its spool.

    Call it from the event loop's thread, before the check pass starts (see
    the module's docstring); use ``check`` in a worker thread; ``close`` it.

    Args:
        workers: How many processes.
        job: Renders a row (inherited by the workers, not pickled).
        preparer: Serialises and signs a message (inherited too).
        columns: A CSV file's header, for the wording of a missing variable.
    """

    def __init__(
        self,
        workers: int,
        job: RowRenderer,
        preparer: Preparer,
        columns: tuple[str, ...] | None,
    ) -> None:
        self.workers = workers
        context = multiprocessing.get_context("fork")
        blocked = {signal.SIGINT, signal.SIGTERM}
        # Blocked while forking: a signal meanwhile waits for this process
        # (a few milliseconds), and the workers start with it blocked until
        # their initializer has made them deaf to it.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(job, preparer, columns),
            )
            # With fork, the first task forks every worker, here and now.
            self._warm: Future[int] = self._pool.submit(_ready)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def close(self) -> None:
        """Stop the workers (those busy finish their chunk first)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def check(
        self,
        rows: Iterable[Item],
        checked: CheckedRows,
        spool: Spool,
        *,
        stop: asyncio.Event | None = None,
    ) -> Checked:
        """Check every row in the workers, recording each row's identity in order.

        Blocking (run it in a thread): the event loop stays free for signals.

        Raises:
            CheckInterruptedError: ``stop`` was set meanwhile.
            WorkerError: A worker process died (killed, out of memory).
        """
        errors: list[InvalidRow] = []
        ahead: deque[tuple[list[Item], int, Future[ChunkAnswer]]] = deque()
        rows_iter = iter(rows)
        try:
            while True:
                while len(ahead) < self.workers * AHEAD_PER_WORKER:
                    items = list(islice(rows_iter, CHUNK_ROWS))
                    if not items:
                        break
                    number = spool.chunks
                    spool.chunks += 1
                    room = spool.lend(len(items) * SPOOLED_SIZE_LIMIT)
                    path = str(spool.chunk_path(number))
                    sent = [_to_worker(item) for item in items]
                    try:
                        future = self._pool.submit(_check_chunk, path, sent, room)
                    except BrokenProcessPool:
                        # A worker died after the last answer was taken.
                        raise _broken(stop) from None
                    ahead.append((items, room, future))
                if not ahead:
                    break
                items, room, future = ahead.popleft()
                answer = self._answer(future, stop)
                spool.give_back(room - answer.used)
                bad = dict(answer.invalid)
                for position, row in items:
                    invalid = bad.get(position)
                    if invalid is not None:
                        errors.append(invalid)
                    checked.add(row, valid=invalid is None)
        finally:
            for _, _, future in ahead:
                future.cancel()
        return Checked(checked, errors)

    def _answer(
        self, future: Future[ChunkAnswer], stop: asyncio.Event | None
    ) -> ChunkAnswer:
        """Wait for one chunk's answer, looking at ``stop`` meanwhile."""
        while True:
            if stop is not None and stop.is_set():
                raise CheckInterruptedError
            done, _ = wait([future], timeout=STOP_POLL, return_when=FIRST_COMPLETED)
            if done:
                break
        try:
            return future.result()
        except BrokenProcessPool:
            raise _broken(stop) from None


def _broken(stop: asyncio.Event | None) -> Exception:
    """Return the error for a pool whose worker died (or was stopped by a signal)."""
    if stop is not None and stop.is_set():
        return CheckInterruptedError()  # the signal reached it too
    return WorkerError(
        "a worker process rendering the batch ended unexpectedly (killed, "
        "or out of memory?); nothing was sent: run again, or with "
        "--workers 1 (MAILER_WORKERS=1) to render in one process"
    )
