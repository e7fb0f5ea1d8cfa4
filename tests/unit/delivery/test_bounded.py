"""The bounded streaming engine: lazy intake, bounded work, streaming, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from mailer.delivery.bounded import Completed, stream_batch


async def collect(
    stream: AsyncIterator[Completed[int, str]],
    into: list[int] | None = None,
) -> list[Completed[int, str]]:
    results = []
    async for done in stream:
        results.append(done)
        if into is not None:
            into.append(done.item)
    return results


async def echo(item: int) -> str:
    await asyncio.sleep(0)
    return f"done {item}"


async def test_every_item_gets_one_result_with_its_position() -> None:
    """Ten items, ten results; each knows its input position and item."""
    results = await collect(stream_batch(range(10), echo, max_running=3))
    assert sorted(done.index for done in results) == list(range(10))
    assert all(done.result == f"done {done.item}" for done in results)
    assert all(done.index == done.item for done in results)


async def test_results_stream_in_completion_order() -> None:
    """A slow first item does not hold back the quick ones behind it."""

    async def slow_first(item: int) -> str:
        await asyncio.sleep(0.05 if item == 0 else 0)
        return str(item)

    results = await collect(stream_batch(range(4), slow_first, max_running=4))
    assert [done.item for done in results][-1] == 0
    assert [done.item for done in results][:3] == [1, 2, 3]


async def test_no_more_than_max_running_attempts_at_once() -> None:
    """Attempts in flight never exceed max_running, and do reach it."""
    in_flight = peak = 0

    async def track(item: int) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return ""

    await collect(stream_batch(range(50), track, max_running=4))
    assert peak == 4


async def test_items_are_pulled_only_as_room_frees_up() -> None:
    """The source is read lazily: never more than max_running items ahead."""
    pulled = finished = 0
    ahead: list[int] = []

    def source() -> Iterator[int]:
        nonlocal pulled
        for item in range(1000):
            pulled += 1
            ahead.append(pulled - finished)
            yield item

    async def work(item: int) -> str:
        nonlocal finished
        await asyncio.sleep(0)
        finished += 1
        return ""

    stream = stream_batch(source(), work, max_running=5)
    async for _ in stream:
        pass
    assert pulled == 1000
    assert max(ahead) <= 5


async def test_an_async_source_works_and_results_do_not_wait_for_it() -> None:
    """Items from an async generator; a slow source does not delay finished results."""
    seen_before_third: list[int] = []
    results: list[int] = []

    async def source() -> AsyncIterator[int]:
        yield 1
        yield 2
        await asyncio.sleep(0.05)  # a slow producer, e.g. a database cursor
        seen_before_third.extend(results)
        yield 3

    async for done in stream_batch(source(), echo, max_running=2):
        results.append(done.item)
    assert sorted(results) == [1, 2, 3]
    assert sorted(seen_before_third) == [1, 2]


async def test_a_failing_source_raises_after_the_running_attempts_end() -> None:
    """The error comes last: what started finishes and is yielded first."""

    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad row source")

    results: list[int] = []
    with pytest.raises(ValueError, match="bad row source"):
        await collect(stream_batch(source(), echo, max_running=5), into=results)
    assert sorted(results) == [1, 2]


async def test_a_failing_async_source_raises_too() -> None:
    """An async source's error is raised after the running attempts end."""

    async def source() -> AsyncIterator[int]:
        yield 1
        raise ValueError("cursor lost")

    results: list[int] = []
    with pytest.raises(ValueError, match="cursor lost"):
        await collect(stream_batch(source(), echo, max_running=5), into=results)
    assert results == [1]


async def test_an_attempt_that_raises_cancels_the_others() -> None:
    """A bug in the attempt propagates; attempts still running are cancelled."""
    cancelled: list[int] = []

    async def explode_on_two(item: int) -> str:
        if item == 2:
            raise RuntimeError("bug")
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return ""

    with pytest.raises(RuntimeError, match="bug"):
        await collect(stream_batch(range(4), explode_on_two, max_running=4))
    assert sorted(cancelled) == [0, 1, 3]


async def test_leaving_the_stream_early_cancels_what_runs() -> None:
    """Closing the stream after one result cancels the attempts in flight."""
    cancelled: list[int] = []

    async def slow(item: int) -> str:
        if item == 0:
            return "quick"
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return ""

    stream = stream_batch(range(3), slow, max_running=3)
    first = await anext(stream)
    await stream.aclose()
    assert first.result == "quick"
    assert sorted(cancelled) == [1, 2]


async def test_max_running_must_be_positive() -> None:
    """A batch with no room to run anything is refused at once."""
    with pytest.raises(ValueError, match="max_running"):
        await collect(stream_batch([1], echo, max_running=0))
