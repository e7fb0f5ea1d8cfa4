"""Run a bounded, streaming batch: a few attempts at once, results as they complete.

``stream_batch(items, attempt, max_running=K)`` pulls items from any iterable or
async iterable only as room frees up, runs at most K attempts at once, and
yields each result as soon as it is final. It never makes one task per item up
front, so memory stays flat whatever the batch size; results come out in
completion order, each with its input position (``Completed.index``).

``MessageClient.stream`` and ``send_many`` use it with ``attempt`` = a send
under the batch's control (``mailer.delivery.control``), which retries inside the
attempt: a message waiting for its retry keeps its place among the K but holds
no connection, so K leaves room for such waits beyond the transactions in
flight.

Errors: an exception raised by the item source stops the intake; the attempts
already running finish (their results are yielded), then it is raised. An
exception raised by an attempt is a bug in the attempt: the others are cancelled
and it propagates.
"""

from __future__ import annotations

import asyncio
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
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Attempt = Callable[[T], Coroutine[Any, Any, R]]


@dataclass(frozen=True, slots=True)
class Completed(Generic[T, R]):
    """A final result, with the item it belongs to and the item's input position."""

    index: int
    item: T
    result: R


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
) -> AsyncIterator[Completed[T, R]]:
    """Attempt every item, at most ``max_running`` at once; yield results as final.

    Args:
        items: The work, pulled lazily (a list, a generator, an async generator):
            an item is pulled only when fewer than ``max_running`` run.
        attempt: ``attempt(item)`` returns the item's final result.
        max_running: Attempts in progress at once.

    Yields:
        One Completed per item, in completion order.

    Raises:
        ValueError: ``max_running`` is below 1.
        Exception: What the item source raised, once running attempts ended.
    """
    if max_running < 1:
        raise ValueError("max_running must be at least 1")
    loop = asyncio.get_running_loop()
    source = _Source(items)
    running: dict[asyncio.Task[R], tuple[int, T]] = {}
    finished: deque[asyncio.Task[R]] = deque()
    positions = itertools.count()
    fetch: asyncio.Task[T] | None = None
    wake = asyncio.Event()

    def on_done(task: asyncio.Task[Any]) -> None:
        finished.append(task)
        wake.set()

    def on_fetched(task: asyncio.Task[Any]) -> None:
        wake.set()

    def start(item: T) -> None:
        task = loop.create_task(attempt(item))
        running[task] = (next(positions), item)
        task.add_done_callback(on_done)

    try:
        while True:
            while len(running) < max_running and not (source.is_exhausted or fetch):
                if source.is_async:
                    fetch = source.fetch()
                    fetch.add_done_callback(on_fetched)
                    break
                pulled = source.next_sync()
                if pulled is None:
                    break
                start(pulled[0])
            if source.is_exhausted and not (running or fetch):
                break
            if not finished and not (fetch and fetch.done()):
                wake.clear()
                await wake.wait()
            if fetch is not None and fetch.done():
                fetched = source.settle_fetch(fetch)
                fetch = None
                if fetched is not None:
                    start(fetched[0])
            while finished:
                task = finished.popleft()
                index, item = running.pop(task)
                yield Completed(index, item, task.result())
    finally:
        leftovers: list[asyncio.Task[Any]] = [*running, *([fetch] if fetch else [])]
        for leftover in leftovers:
            leftover.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)
    if source.error is not None:
        raise source.error
