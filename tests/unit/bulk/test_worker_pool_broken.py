"""A worker pool that breaks between two chunks ends the check with WorkerError."""

from __future__ import annotations

import asyncio
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from mailer.bulk.checkpass import CheckInterruptedError
from mailer.bulk.identity import CheckedRows
from mailer.bulk.recipients import Recipient
from mailer.bulk.spool import Spool
from mailer.bulk.workers import WorkerError, WorkerPool


class _BrokenPool:
    """A process pool whose worker has died: every submit raises, as the real one does."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise BrokenProcessPool("A child process terminated abruptly")


def _pool() -> WorkerPool:
    """Return a WorkerPool over the broken stand-in (nothing forked)."""
    pool = object.__new__(WorkerPool)
    pool.workers = 1
    pool._pool = _BrokenPool()  # type: ignore[assignment]
    return pool


def _rows() -> list[tuple[int, Recipient]]:
    return [(n, Recipient(n + 1, f"u{n}@example.test")) for n in range(1, 4)]


def test_a_pool_broken_before_a_chunk_is_given_raises_worker_error(
    tmp_path: Path,
) -> None:
    """The user gets WorkerError (run again, or --workers 1), not BrokenProcessPool."""
    with Spool(tmp_path) as spool, pytest.raises(WorkerError, match="--workers 1"):
        _pool().check(_rows(), CheckedRows("rows.csv"), spool)


def test_a_pool_broken_by_a_stop_signal_is_an_interrupted_check(
    tmp_path: Path,
) -> None:
    """When the batch was told to stop, the broken pool is the signal's doing."""
    stop = asyncio.Event()
    stop.set()
    with Spool(tmp_path) as spool, pytest.raises(CheckInterruptedError):
        _pool().check(_rows(), CheckedRows("rows.csv"), spool, stop=stop)
