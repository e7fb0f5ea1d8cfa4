"""The shared rate limit's SQL functions on a real PostgreSQL (mailer.queue.ratesql)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from mailer.queue import schema
from mailer.queue.ratelimit import PostgresRateStore
from mailer.queue.ratesql import MOVE_SQL, REFUSAL_SQL, RESERVE_SQL
from mailer.queue.schema import apply_schema
from mailer.transports.ratelimit import MAX_SLOWDOWN

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


@pytest.fixture
async def connection(queue_database: str) -> AsyncIterator[Connection]:
    """An autocommit connection to a database with the queue's schema."""
    async with await psycopg.AsyncConnection.connect(
        queue_database, autocommit=True
    ) as c:
        yield c


async def reserve(
    c: Connection, interval: float | None, burst: int = 0, cooldown: float = 60.0
) -> tuple[Any, ...]:
    """Return (slot_at, db_now, gen, slowdowns, spacing, rate_before, seq)."""
    cursor = await c.execute(
        RESERVE_SQL.encode(), ["r:25", interval, burst, cooldown, "x", 1, 0.0]
    )
    row = await cursor.fetchone()
    assert row is not None
    return row


async def move(
    c: Connection, slot: tuple[Any, ...], *, window: int | None, credit: float = 0.0
) -> tuple[Any, ...]:
    """Move the reserved ``slot``; return the move's row (moved last)."""
    params = ["r:25", slot[0], slot[6], slot[2], window, credit, 0.1, 0, 60.0, "x", 0]
    cursor = await c.execute(MOVE_SQL.encode(), params)
    row = await cursor.fetchone()
    assert row is not None
    return row


async def refuse(
    c: Connection,
    generation: int,
    *,
    interval: float | None = 0.1,
    cooldown: float = 60.0,
    observed: float | None = None,
) -> tuple[Any, ...]:
    """Return (gen, slowdowns, spacing, slowed, workers)."""
    params = ["r:25", interval, generation, cooldown, observed, MAX_SLOWDOWN, 30.0]
    cursor = await c.execute(REFUSAL_SQL.encode(), params)
    row = await cursor.fetchone()
    assert row is not None
    return row


async def tat(c: Connection) -> float:
    cursor = await c.execute(
        b"SELECT extract(epoch FROM tat)::float8 FROM mailer_rate_limits"
    )
    row = await cursor.fetchone()
    assert row is not None
    return float(row[0])


async def test_slots_are_spaced_by_the_interval_after_the_burst(
    connection: Connection,
) -> None:
    """At 10/s burst=2: three slots now, then one every 100 ms, numbered in order."""
    rows = [await reserve(connection, 0.1, burst=2) for _ in range(5)]
    slots = [row[0] for row in rows]
    assert slots[2] - slots[0] < 0.05  # the burst: at once
    assert slots[3] - slots[0] == pytest.approx(0.1, abs=1e-6)
    assert slots[4] - slots[3] == pytest.approx(0.1, abs=1e-6)
    assert [row[6] for row in rows] == [1, 2, 3, 4, 5]
    assert all(row[1] <= row[0] + 1e-6 for row in rows[:3])  # now, on the DB clock


async def test_one_round_trip_reserves_several_slots_the_first_ahead_by_the_lead(
    connection: Connection,
) -> None:
    """count=3, lead=4 ms: three slots 100 ms apart, the first 4 ms after the database's now."""
    cursor = await connection.execute(
        RESERVE_SQL.encode(), ["r:25", 0.1, 0, 60.0, "x", 3, 0.004]
    )
    rows = await cursor.fetchall()
    assert [row[6] for row in rows] == [1, 2, 3]
    assert rows[0][0] - rows[0][1] == pytest.approx(0.004, abs=1e-6)
    assert rows[2][0] - rows[0][0] == pytest.approx(0.2, abs=1e-6)


async def test_concurrent_reservations_never_crowd_a_slot(
    queue_database: str,
) -> None:
    """Four connections reserving at once get distinct slots, never closer than the interval."""
    interval = 0.001

    async def one_worker() -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(
            queue_database, autocommit=True
        ) as c:
            return [await reserve(c, interval) for _ in range(50)]

    rows = [
        row
        for rows in await asyncio.gather(*(one_worker() for _ in range(4)))
        for row in rows
    ]
    slots = sorted(row[0] for row in rows)
    assert sorted(row[6] for row in rows) == list(range(1, 201))
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= interval - 1e-6


async def test_a_late_slot_moves_to_now_and_delays_the_rest(
    connection: Connection,
) -> None:
    """Late, with fewer than count + burst reserved after it: moved to now, later slots pushed back as much."""
    first = await reserve(connection, 0.1)
    await reserve(connection, 0.1)
    await reserve(connection, 0.1)
    before = await tat(connection)
    await asyncio.sleep(0.06)
    moved = await move(connection, first, window=3, credit=0.005)
    late = moved[0] - first[0]
    assert moved[7] is True
    assert moved[6] == first[6]  # the same slot, not a new one
    assert 0.05 < late < 0.1
    assert moved[0] == pytest.approx(moved[1] - 0.005, abs=1e-6)  # now, less the credit
    assert await tat(connection) == pytest.approx(before + late, abs=1e-6)


async def test_a_late_slot_with_count_plus_burst_after_it_is_replaced(
    connection: Connection,
) -> None:
    """Late with a full window reserved after it: not moved; a new slot is reserved at the end."""
    first = await reserve(connection, 0.1)
    await reserve(connection, 0.1)
    await reserve(connection, 0.1)
    await asyncio.sleep(0.02)
    replaced = await move(connection, first, window=2)
    assert replaced[7] is False
    assert replaced[6] == 4
    assert replaced[0] == pytest.approx(first[0] + 0.3, abs=1e-6)


async def test_a_slot_late_by_more_than_an_interval_is_replaced(
    connection: Connection,
) -> None:
    """Moving would delay everyone more than a lost slot costs: a new slot instead."""
    first = await reserve(connection, 0.1)
    await asyncio.sleep(0.15)
    replaced = await move(connection, first, window=50)
    assert replaced[7] is False
    assert replaced[6] == 2


async def test_a_refusal_halves_once_per_generation_down_to_a_sixteenth(
    connection: Connection,
) -> None:
    """Each refusal of the current generation halves and pauses; an older one only restarts the cool-down."""
    await reserve(connection, 0.1)
    assert (await refuse(connection, 0))[:4] == (1, 1, 0.2, True)
    assert (await refuse(connection, 0))[:4] == (1, 1, 0.2, False)
    for generation in range(1, 6):
        await refuse(connection, generation)
    assert (await refuse(connection, 4))[:4] == (4, 4, 1.6, False)
    slot = await reserve(connection, 0.1, burst=5)
    assert slot[4] == pytest.approx(1.6)  # no burst while slowed either
    assert slot[0] - slot[1] > 1.6  # paused behind the refusals


async def until_step(c: Connection) -> None:
    """Sleep until just after the relay's next doubling back (on the DB clock)."""
    cursor = await c.execute(
        b"SELECT extract(epoch FROM step_at - clock_timestamp())::float8"
        b" FROM mailer_rate_limits"
    )
    row = await cursor.fetchone()
    assert row is not None
    await asyncio.sleep(max(0.0, float(row[0])) + 0.05)


async def test_the_rate_doubles_back_one_step_per_quiet_cooldown(
    connection: Connection,
) -> None:
    """After each cool-down without a refusal the spacing halves again, down to the limit's."""
    await refuse(connection, 0, cooldown=1.0)
    await refuse(connection, 1, cooldown=1.0)
    assert (await reserve(connection, 0.1, cooldown=1.0))[3:5] == (2, 0.4)
    await until_step(connection)
    assert (await reserve(connection, 0.1, cooldown=1.0))[3:5] == (1, 0.2)
    await until_step(connection)
    assert (await reserve(connection, 0.1, cooldown=1.0))[3:5] == (0, 0.1)


async def test_a_relay_with_no_limit_is_paced_only_once_refused(
    connection: Connection,
) -> None:
    """No limit: no slot (spacing null) until a refusal; then half the rate the live workers had together."""
    free = await reserve(connection, None)
    assert (free[4], free[6]) == (None, 0)
    await connection.execute(
        b"INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now()), (now()),"
        b" (now() - interval '1 hour')"
    )
    # This worker saw 100/s; two workers alive: 200/s together, halved.
    refused = await refuse(connection, 0, interval=None, observed=0.01)
    assert refused == (1, 1, pytest.approx(0.01), True, 2)
    paced = await reserve(connection, None)
    assert paced[4] == pytest.approx(0.01)
    assert paced[6] == 1


async def test_the_store_maps_database_time_onto_the_local_clock(
    queue_database: str,
) -> None:
    """PostgresRateStore's slot for an idle relay is now on the local clock, within the round trip."""
    import time

    store = PostgresRateStore(queue_database)
    try:
        for _ in range(5):  # a few samples: the offset keeps the best
            await store.reserve("c:25", interval=1.0, burst=10, cooldown=60, rate="1/s")
        before = time.monotonic()
        [reservation] = await store.reserve(
            "c:25", interval=1.0, burst=10, cooldown=60, rate="1/s"
        )
        after = time.monotonic()
    finally:
        await store.aclose()
    assert reservation.slot is not None
    error = store.clock.error
    assert before - error - 0.001 <= reservation.slot.local <= after + error + 0.001


async def test_a_database_of_the_previous_release_gets_migration_2(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue database at version 1 is upgraded by `mailer queue init` with the rate-limit table only."""
    async with await psycopg.AsyncConnection.connect(
        empty_database, autocommit=True
    ) as c:
        with monkeypatch.context() as patched:
            patched.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
            patched.setattr(schema, "LATEST", 1)
            await apply_schema(c)
        assert await schema.applied_version(c) == 1
        done = await apply_schema(c)
        # Migration 2, then whatever later releases added after it.
        assert (
            done[0] == "applied mailer migration 2: rate limits shared by the workers"
        )
        assert len(done) == len(schema.MIGRATIONS) - 1
        assert await schema.applied_version(c) == schema.LATEST
