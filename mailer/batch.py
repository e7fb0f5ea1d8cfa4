"""Run a bounded, streaming batch: a few attempts at once, results as they complete.

``stream_batch(items, attempt, max_running=K)`` pulls items from any iterable or
async iterable only as room frees up, runs at most K attempts at once, and
yields each result as soon as it is final. It never makes one task per item up
front, so memory stays flat whatever the batch size; results come out in
completion order, each with its input position (``Completed.index``).

``MessageClient.send_many`` and ``stream`` use it with ``attempt = send`` and
K = a small multiple of ``MAILER_CONCURRENCY`` (the transport bounds the
connections; the extra attempts keep each connection's next message ready).

The seam for retries
--------------------
An attempt may return ``RetryLater(delay)`` instead of a final result. The item
is then *parked*: it holds no running slot, and so no connection, while it
waits. When its delay is over it is attempted again (its attempt number grows)
before any new item is pulled. Parked items count toward ``max_pending``, the
bound on items pulled from the source but not yet final, so a wave of retries
slows the intake instead of growing memory. A reply-aware retry policy plugs in
by wrapping the attempt: look at the failure, return ``RetryLater`` or the final
result. Nothing else in the engine needs to change.

Errors: an exception raised by the item source stops the intake; the attempts
already running finish (their results are yielded), then it is raised. An
exception raised by an attempt is a bug in the attempt: the others are cancelled
and it propagates.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Attempt = Callable[[T, int], Coroutine[Any, Any, "R | RetryLater"]]


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Returned by an attempt: try this item again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class Completed(Generic[T, R]):
    """A final result, with the item it belongs to and the item's input position."""

    index: int
    item: T
    result: R
    attempts: int = 1


@dataclass(slots=True)
class _Job(Generic[T]):
    index: int
    item: T
    attempts: int = 0


@dataclass(order=True, slots=True)
class _Parked(Generic[T]):
    due: float
    sequence: int
    job: _Job[T] = field(compare=False)


class _Source(Generic[T]):
    """One item at a time from a sync or async iterable; remembers how it ended."""

    def __init__(self, items: Iterable[T] | AsyncIterable[T]) -> None:
        self._sync: Iterator[T] | None = None
        self._async: AsyncIterator[T] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        else:
            self._sync = iter(items)
        self.is_exhausted = False
        self.error: BaseException | None = None

    @property
    def is_async(self) -> bool:
        """Return whether the items come from an async iterable."""
        return self._async is not None

    def next_sync(self) -> tuple[T] | None:
        """Return the next item (in a 1-tuple), or None at the end or on error."""
        assert self._sync is not None  # noqa: S101 - is_async was checked
        try:
            return (next(self._sync),)
        except StopIteration:
            self.is_exhausted = True
        except Exception as exc:  # noqa: BLE001 - raised once running work ends
            self.is_exhausted, self.error = True, exc
        return None

    def fetch(self) -> asyncio.Task[T]:
        """Start fetching the next item of an async iterable."""
        assert self._async is not None  # noqa: S101 - is_async was checked
        return asyncio.ensure_future(anext(self._async))

    def settle_fetch(self, task: asyncio.Task[T]) -> tuple[T] | None:
        """Return the fetched item (in a 1-tuple), or None at the end or on error."""
        if task.cancelled():
            self.is_exhausted = True
            return None
        error = task.exception()
        if isinstance(error, StopAsyncIteration):
            self.is_exhausted = True
        elif error is not None:
            self.is_exhausted, self.error = True, error
        else:
            return (task.result(),)
        return None


async def stream_batch(
    items: Iterable[T] | AsyncIterable[T],
    attempt: Attempt[T, R],
    *,
    max_running: int,
    max_pending: int | None = None,
) -> AsyncIterator[Completed[T, R]]:
    """Attempt every item, at most ``max_running`` at once; yield results as final.

    Args:
        items: The work, pulled lazily (a list, a generator, an async generator).
        attempt: ``attempt(item, attempt_number)`` returns the result, or
            ``RetryLater`` to be called again later (see the module docstring).
        max_running: Attempts in progress at once.
        max_pending: Items pulled but not final (running, parked or due);
            default ``2 * max_running``.

    Yields:
        One Completed per item, in completion order.

    Raises:
        ValueError: ``max_running`` is below 1.
        Exception: What the item source raised, once running attempts ended.
    """
    if max_running < 1:
        raise ValueError("max_running must be at least 1")
    pending_limit = max(max_pending or 2 * max_running, max_running)
    loop = asyncio.get_running_loop()
    source = _Source(items)
    running: dict[asyncio.Task[R | RetryLater], _Job[T]] = {}
    finished: deque[asyncio.Task[R | RetryLater]] = deque()
    due: deque[_Job[T]] = deque()
    parked: list[_Parked[T]] = []
    sequence = itertools.count()
    positions = itertools.count()
    fetch: asyncio.Task[T] | None = None
    pending = 0
    wake = asyncio.Event()

    def on_done(task: asyncio.Task[Any]) -> None:
        finished.append(task)
        wake.set()

    def on_fetched(task: asyncio.Task[Any]) -> None:
        wake.set()

    def start(job: _Job[T]) -> None:
        job.attempts += 1
        task = loop.create_task(attempt(job.item, job.attempts))
        running[task] = job
        task.add_done_callback(on_done)

    try:
        while True:
            now = loop.time()
            while parked and parked[0].due <= now:
                due.append(heapq.heappop(parked).job)
            while len(running) < max_running:
                if due:
                    start(due.popleft())
                    continue
                if pending >= pending_limit or source.is_exhausted or fetch:
                    break
                if source.is_async:
                    fetch = source.fetch()
                    fetch.add_done_callback(on_fetched)
                    break
                pulled = source.next_sync()
                if pulled is None:
                    break
                pending += 1
                start(_Job(next(positions), pulled[0]))
            if source.is_exhausted and not (running or parked or due or fetch):
                break
            if not finished and not (fetch and fetch.done()):
                wake.clear()
                timer = loop.call_at(parked[0].due, wake.set) if parked else None
                await wake.wait()
                if timer is not None:
                    timer.cancel()
            if fetch is not None and fetch.done():
                fetched = source.settle_fetch(fetch)
                fetch = None
                if fetched is not None:
                    pending += 1
                    start(_Job(next(positions), fetched[0]))
            while finished:
                task = finished.popleft()
                job = running.pop(task)
                outcome = task.result()
                if isinstance(outcome, RetryLater):
                    when = loop.time() + outcome.delay
                    heapq.heappush(parked, _Parked(when, next(sequence), job))
                    continue
                pending -= 1
                yield Completed(job.index, job.item, outcome, job.attempts)
    finally:
        leftovers: list[asyncio.Task[Any]] = [*running, *([fetch] if fetch else [])]
        for leftover in leftovers:
            leftover.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)
    if source.error is not None:
        raise source.error
