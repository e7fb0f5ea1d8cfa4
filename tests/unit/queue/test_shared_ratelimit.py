"""SharedRateLimiter on a fake store and virtual time: reservations, late slots, slow-downs.

``FakeStore`` keeps the relay's state as ``mailer.queue.ratesql``'s functions
do (GCRA, the sequence number, moves, refusals), in Python; the SQL itself is
tested against PostgreSQL in tests/integration/queue/test_rate_sql.py.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from mailer.config.rates import RateLimit
from mailer.config.settings import MailerSettings
from mailer.exceptions import DeliveryError, QueueError
from mailer.queue.ratelimit import (
    LATENESS,
    MOVED_LATENESS,
    ClockOffset,
    RelayState,
    Reservation,
    SharedRateLimiter,
    SharedRateLimits,
    Slot,
)
from mailer.replies import Reply
from mailer.transports.factory import transport_from_settings
from mailer.transports.failover import FailoverTransport
from mailer.transports.ratelimit import MARGIN, MAX_SLOWDOWN, RateLimiter
from mailer.transports.smtp.transport import SMTPTransport

REFUSAL = Reply(421, "4.7.0 rate limit exceeded")
# The database's clock runs this far from the workers' monotonic clocks.
DB_OFFSET = 1_700_000_000.0


class Clock:
    """A clock the test (or the virtual-time scheduler) moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Row:
    """One relay's row, as in mailer_rate_limits."""

    tat: float = -math.inf
    seq: int = 0
    halvings: int = 0
    generation: int = 0
    step_at: float | None = None
    measured: float | None = None
    rate: str | None = None


@dataclass
class FakeStore:
    """The SQL functions' logic in Python, on the test's clock (plus DB_OFFSET)."""

    clock: Clock
    rows: dict[str, Row] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: bool = False
    workers: int = 1
    moves: bool = True  # False: every late slot is lost (for comparison)
    lead: float = 0.0  # how far ahead of now a slot is put

    def _row(self, relay: str, cooldown: float) -> tuple[Row, float]:
        if self.fail:
            raise QueueError(
                "the shared rate limit: the queue database cannot be reached "
                "(MAILER_QUEUE_DSN): connection refused"
            )
        row = self.rows.setdefault(relay, Row())
        t = self.clock.now + DB_OFFSET
        if row.halvings and row.step_at is not None and t >= row.step_at:
            steps = 1 + int((t - row.step_at) // cooldown)
            if steps >= row.halvings:
                row.halvings, row.step_at, row.measured = 0, None, None
            else:
                row.halvings -= steps
                row.step_at += steps * cooldown
        return row, t

    def _spacing(self, row: Row, interval: float | None) -> float | None:
        base = row.measured if row.measured is not None else interval
        return None if base is None else base * 2**row.halvings

    async def reserve(
        self,
        relay: str,
        /,
        *,
        interval: float | None,
        burst: int,
        cooldown: float,
        rate: str,
        count: int = 1,
        lead: float = 0.0,
        late: Slot | None = None,
        window: int | None = None,
        credit: float = 0.0,
    ) -> list[Reservation]:
        self.calls.append(("reserve", {"relay": relay, "late": late, "count": count}))
        row, t = self._row(relay, cooldown)
        before, row.rate = row.rate, rate
        spacing = self._spacing(row, interval)
        state = RelayState(row.generation, row.halvings, spacing)
        if spacing is None:
            return [Reservation(None, state, before)]
        behind = 0.0 if late is None else max(0.0, t - late.remote - credit)
        if (
            late is not None
            and self.moves
            and late.generation == row.generation
            and behind <= spacing
            and (window is None or row.seq - late.seq < window)
        ):
            row.tat += behind
            slot = late.remote + behind
            moved = Slot(slot - DB_OFFSET, slot, late.seq, row.generation)
            return [Reservation(moved, state, before, moved=True)]
        reservations = []
        for _ in range(1 if late is not None else count):
            tolerance = burst * spacing if row.halvings == 0 else 0.0
            slot = max(t + self.lead, row.tat - tolerance)
            row.tat = max(row.tat, slot) + spacing
            row.seq += 1
            remote = Slot(slot - DB_OFFSET, slot, row.seq, row.generation)
            reservations.append(Reservation(remote, state, before))
        return reservations

    async def refuse(
        self,
        relay: str,
        /,
        *,
        interval: float | None,
        generation: int,
        cooldown: float,
        observed: float | None,
    ) -> RelayState:
        self.calls.append(("refuse", {"generation": generation, "observed": observed}))
        row, t = self._row(relay, cooldown)
        slowed = False
        if generation != row.generation:
            if row.halvings:
                row.step_at = t + cooldown
        else:
            row.step_at = t + cooldown
            if row.halvings < MAX_SLOWDOWN:
                if interval is None and row.measured is None:
                    assert observed is not None
                    row.measured = observed / self.workers
                row.halvings += 1
                row.generation += 1
                slowed = True
            spacing = self._spacing(row, interval)
            assert spacing is not None
            row.tat = max(row.tat, t) + spacing
        return RelayState(
            row.generation, row.halvings, self._spacing(row, interval), slowed
        )

    async def state(self, relay: str, /, *, cooldown: float) -> RelayState | None:
        self.calls.append(("state", {}))
        if relay not in self.rows:
            return None
        row, _ = self._row(relay, cooldown)
        return RelayState(row.generation, row.halvings, self._spacing(row, None))

    async def aclose(self) -> None:
        self.calls.append(("aclose", {}))


def limiter_on(
    store: FakeStore, rate: RateLimit | None, clock: Clock, **options: Any
) -> SharedRateLimiter:
    """A limiter whose sleeps move the fake clock (one task at a time)."""

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    return SharedRateLimiter(
        rate, store=store, name="relay:25", clock=clock, sleep=sleep, **options
    )


def busiest_window(times: list[float], period: float) -> int:
    ordered = sorted(times)
    return max(
        bisect.bisect_left(ordered, t + period) - i for i, t in enumerate(ordered)
    )


def test_shared_limiter_is_a_rate_limiter() -> None:
    """The transport's lanes take a SharedRateLimiter as they take the local one."""
    store = FakeStore(Clock())
    assert isinstance(limiter_on(store, RateLimit(10, 1.0), store.clock), RateLimiter)


def test_every_relay_of_the_worker_gets_its_shared_limiter(
    make_settings: Any,
) -> None:
    """transport_from_settings hands each relay the limiter the factory makes, one per relay."""
    store = FakeStore(Clock())
    limits = SharedRateLimits(store)
    settings: MailerSettings = make_settings(
        dsn="failover(smtp://a.example.test:2525?rate=10/s smtp://b.example.test:2526)"
    )
    transport = transport_from_settings(settings, limiters=limits.limiter)
    assert isinstance(transport, FailoverTransport)
    relays = [relay for _, relay in transport.relays]
    assert all(isinstance(relay, SMTPTransport) for relay in relays)
    limiters = [relay.limiter for relay in relays if isinstance(relay, SMTPTransport)]
    assert [type(limiter) for limiter in limiters] == [SharedRateLimiter] * 2
    assert [limiter.name for limiter in limiters] == [  # type: ignore[attr-defined]
        "a.example.test:2525",
        "b.example.test:2526",
    ]
    assert limits.limiter(settings.relays[0]) is limiters[0]
    assert limiters[0].rate == RateLimit(10, 1.0)  # type: ignore[attr-defined]


async def test_no_turn_without_a_reservation() -> None:
    """A limited relay never starts on try_acquire alone: no chaining past the shared schedule."""
    store = FakeStore(Clock())
    limiter = limiter_on(store, RateLimit(10, 1.0), store.clock)
    assert not limiter.try_acquire()
    assert store.calls == []


async def test_a_reserved_slot_is_slept_for_then_taken_once() -> None:
    """wait_ready sleeps until the slot the store gave; one try_acquire takes it, the next cannot."""
    clock = Clock()
    store = FakeStore(clock)
    limiter = limiter_on(store, RateLimit(10, 1.0), clock)
    assert await limiter.wait_ready() == 0.0  # the relay was idle: now
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    waited = await limiter.wait_ready()
    assert waited == pytest.approx(0.1 * (1 + MARGIN))
    assert limiter.try_acquire()
    assert limiter.taken == 2


async def test_lanes_waiting_at_once_share_one_round_trip() -> None:
    """Three lanes asking together: one reservation call for three slots, one interval apart."""
    clock = Clock()
    scheduler = VirtualTime(clock, lambda: 0.0)
    store = FakeStore(clock)
    limiter = SharedRateLimiter(
        RateLimit(10, 1.0), store=store, name="relay:25", clock=clock,
        sleep=scheduler.sleep,
    )  # fmt: skip
    started: list[float] = []

    async def lane() -> None:
        await limiter.wait_ready()
        assert limiter.try_acquire()
        started.append(clock.now)

    await scheduler.run([asyncio.create_task(lane()) for _ in range(3)])
    assert [call["count"] for name, call in store.calls if name == "reserve"] == [3]
    interval = 0.1 * (1 + MARGIN)
    assert started == pytest.approx([1000.0, 1000.0 + interval, 1000.0 + 2 * interval])


async def test_a_slot_reached_too_late_is_moved_to_now() -> None:
    """Late by more than the lateness allowed, a slot is not taken; wait_ready moves it (no slot lost)."""
    clock = Clock()
    store = FakeStore(clock)
    limiter = limiter_on(store, RateLimit(10, 1.0), clock)
    await limiter.wait_ready()
    tat = store.rows["relay:25"].tat
    clock.now += 0.05  # the process did not run in time: half an interval
    assert not limiter.try_acquire()
    assert await limiter.wait_ready() == 0.0
    assert store.calls[-1][1]["late"] is not None
    assert limiter.try_acquire()
    assert (limiter.moved, limiter.missed) == (1, 0)
    # Every later reservation is pushed back by the lateness, less what of
    # the lateness allowed the moved slot keeps.
    kept = MOVED_LATENESS * LATENESS
    assert store.rows["relay:25"].tat == pytest.approx(tat + 0.05 - kept)


async def test_a_slot_late_by_more_than_an_interval_is_lost_not_moved() -> None:
    """Moving it would delay every later start by more than one slot is worth: a new one is reserved."""
    clock = Clock()
    store = FakeStore(clock)
    limiter = limiter_on(store, RateLimit(10, 1.0), clock)
    await limiter.wait_ready()
    clock.now += 0.5
    assert not limiter.try_acquire()
    await limiter.wait_ready()
    assert (limiter.moved, limiter.missed) == (0, 1)
    assert limiter.try_acquire()


async def test_a_late_slot_with_a_full_window_after_it_is_lost_not_moved() -> None:
    """When count + burst reservations came after a late slot, it cannot move: a new one is reserved."""
    clock = Clock()
    store = FakeStore(clock)
    rate = RateLimit(2, 1.0)
    limiter = limiter_on(store, rate, clock)
    other = limiter_on(store, rate, clock)  # another worker
    await limiter.wait_ready()  # slot 1, now; not taken in time
    for _ in range(2):  # slots 2 and 3, each waited for and taken
        await other.wait_ready()
        assert other.try_acquire()
    clock.now += 0.01  # slot 1 is now late, though by less than an interval
    assert not limiter.try_acquire()
    await limiter.wait_ready()
    assert (limiter.moved, limiter.missed) == (0, 1)
    assert store.rows["relay:25"].seq == 4
    assert limiter.try_acquire()


async def test_a_slow_down_drops_the_slots_reserved_before_it() -> None:
    """A new generation (this worker's refusal, or another's) drops the slots reserved before it."""
    clock = Clock()
    store = FakeStore(clock)
    limiter = limiter_on(store, RateLimit(10, 1.0), clock)
    await limiter.wait_ready()  # a slot, due now
    await limiter.record_refusal(REFUSAL, generation=0)
    assert limiter.generation == 1
    assert limiter.missed == 1
    assert not limiter.try_acquire()
    assert store.rows["relay:25"].halvings == 1


async def test_a_relay_with_no_limit_makes_no_round_trip_until_slowed() -> None:
    """No limit: every start is free and the store is not asked; once slowed (refresh), starts are reserved."""
    clock = Clock()
    store = FakeStore(clock)
    limiter = limiter_on(store, None, clock, cooldown=60)
    for _ in range(100):
        assert await limiter.wait_ready() == 0.0
        assert limiter.try_acquire()
        clock.now += 0.01
    assert store.calls == []
    other = limiter_on(store, None, clock, cooldown=60)  # another worker
    other.try_acquire()
    await other.record_refusal(REFUSAL, generation=0)
    await limiter.refresh()
    assert limiter.is_paced
    assert not limiter.try_acquire()
    await limiter.wait_ready()
    assert store.calls[-1][0] == "reserve"
    assert limiter.try_acquire()


async def test_a_refusal_passes_the_generation_and_the_observed_rate() -> None:
    """The store gets the generation of the refused transaction; a relay with no limit sends its rate too."""
    clock = Clock()
    store = FakeStore(clock, workers=2)
    limiter = limiter_on(store, None, clock, cooldown=60)
    for _ in range(50):
        limiter.try_acquire()
        clock.now += 0.01
    await limiter.record_refusal(REFUSAL, generation=0)
    await limiter.record_refusal(REFUSAL, generation=0)  # an older transaction's
    refusals = [call for name, call in store.calls if name == "refuse"]
    assert [call["generation"] for call in refusals] == [0, 0]
    assert refusals[0]["observed"] == pytest.approx(0.01, rel=0.05)
    assert store.rows["relay:25"].halvings == 1  # counted once
    # Two workers at 100/s each share the relay: 200/s, halved.
    assert limiter.spacing == pytest.approx(0.01, rel=0.05)


async def test_the_store_out_of_reach_is_a_transient_error_naming_the_relay() -> None:
    """No database: the attempt fails transient (the message waits for its retry), naming the relay."""
    clock = Clock()
    store = FakeStore(clock, fail=True)
    limiter = limiter_on(store, RateLimit(10, 1.0), clock)
    with pytest.raises(DeliveryError) as caught:
        await limiter.wait_ready()
    assert caught.value.transient
    assert str(caught.value).startswith("relay:25: the rate limit the queue's workers")
    assert "tried again later" in str(caught.value)


async def test_a_store_that_does_not_answer_fails_the_attempt_in_time() -> None:
    """A database that hangs: after MAILER_TIMEOUT the attempt fails transient instead of waiting forever."""

    class HangingStore(FakeStore):
        async def reserve(self, relay: str, /, **options: Any) -> list[Reservation]:
            await asyncio.Event().wait()
            raise AssertionError("never answers")

    clock = Clock()
    limiter = SharedRateLimiter(
        RateLimit(10, 1.0), store=HangingStore(clock), name="relay:25", timeout=0.05
    )
    with pytest.raises(DeliveryError) as caught:
        await asyncio.wait_for(limiter.wait_ready(), 5)
    assert caught.value.transient
    assert "did not answer within 0.05s" in str(caught.value)


async def test_a_refusal_that_cannot_be_recorded_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refusal the store cannot take is a warning, not an error for the message."""
    clock = Clock()
    limiter = limiter_on(FakeStore(clock, fail=True), RateLimit(10, 1.0), clock)
    with caplog.at_level(logging.WARNING, logger="mailer.ratelimit"):
        await limiter.record_refusal(REFUSAL, generation=0)
    assert "could not be lowered" in caplog.text


async def test_workers_with_other_limits_are_told_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two workers with different MAILER_RATE_LIMIT on one relay: a warning, once."""
    clock = Clock()
    store = FakeStore(clock)
    ours = limiter_on(store, RateLimit(10, 1.0), clock)
    theirs = limiter_on(store, RateLimit(20, 1.0), clock)
    with caplog.at_level(logging.WARNING, logger="mailer.ratelimit"):
        for _ in range(3):
            await theirs.wait_ready()
            await ours.wait_ready()
    assert caplog.text.count("another worker limits it to 20/s, this one to 10/s") == 1


def test_the_clock_offset_keeps_the_sample_with_the_shortest_round_trip() -> None:
    """The offset comes from the tightest round trip; an old sample gives way as it ages."""
    offset = ClockOffset(drift=1e-3)
    offset.sample(10.0, 10.010, 5000.0)  # 10 ms round trip
    assert offset.local(5000.0) == pytest.approx(10.005)
    offset.sample(11.0, 11.002, 5001.004)  # 2 ms: better
    assert offset.local(5001.004) == pytest.approx(11.001)
    offset.sample(12.0, 12.006, 5002.0)  # 6 ms: worse, not yet aged enough
    assert offset.local(5001.004) == pytest.approx(11.001)
    offset.sample(20.0, 20.006, 5009.0)  # 9 s later the old one is worth 10 ms
    assert offset.local(5009.0) == pytest.approx(20.003)


# --- the bound, with several workers and lanes on virtual time ----------------


class VirtualTime:
    """Run lanes on one clock: each sleep ends when the scheduler says (later, if late)."""

    def __init__(self, clock: Clock, lateness: Any) -> None:
        self.clock = clock
        self.lateness = lateness
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def sleep(self, seconds: float) -> None:
        wake = self.clock.now + seconds + self.lateness()
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (wake, next(self._order), future))
        await future

    async def run(self, tasks: list[asyncio.Task[None]]) -> None:
        while not all(task.done() for task in tasks):
            for _ in range(20):  # let every runnable lane reach its next sleep
                await asyncio.sleep(0)
            if self._waiting:
                wake, _, future = heapq.heappop(self._waiting)
                self.clock.now = max(self.clock.now, wake)
                future.set_result(None)
        for task in tasks:
            task.result()


async def run_workers(
    rate: RateLimit,
    *,
    workers: int,
    lanes: int,
    starts: int,
    seed: int,
    moves: bool = True,
) -> tuple[list[float], list[SharedRateLimiter]]:
    """Lanes of several workers start ``starts`` transactions as the Lane does."""
    clock = Clock()
    rng = random.Random(seed)  # noqa: S311 - reproducible lateness, not a secret

    def lateness() -> float:
        # Mostly on time; sometimes a busy loop, now and then a long stall.
        roll = rng.random()
        if roll < 0.8:
            return rng.uniform(0, 0.002)
        if roll < 0.97:
            return rng.uniform(0, 0.02)
        if roll < 0.99:
            return rng.uniform(0.02, 0.3)
        return rng.uniform(0.3, 3.0)

    scheduler = VirtualTime(clock, lateness)
    store = FakeStore(clock, moves=moves)
    limiters = [
        SharedRateLimiter(
            rate, store=store, name="relay:25", clock=clock, sleep=scheduler.sleep
        )
        for _ in range(workers)
    ]
    started: list[float] = []

    async def lane(limiter: SharedRateLimiter) -> None:
        while len(started) < starts:
            # The lane: wait for a turn, (connection ready), then take it.
            await limiter.wait_ready()
            if limiter.try_acquire():
                started.append(clock.now)
                await scheduler.sleep(0.001)  # the transaction

    tasks = [
        asyncio.create_task(lane(limiter)) for limiter in limiters for _ in range(lanes)
    ]
    await scheduler.run(tasks)
    return started, limiters


@pytest.mark.parametrize(
    ("rate", "workers", "lanes"),
    [
        (RateLimit(50, 1.0), 2, 10),
        (RateLimit(50, 1.0, burst=10), 2, 10),
        (RateLimit(50, 1.0), 5, 20),  # 100 lanes: more reserved than one period
        (RateLimit(3, 1.0), 2, 10),  # late slots mostly cannot move
        (RateLimit(600, 60.0, burst=5), 3, 5),
    ],
)
async def test_no_window_holds_more_than_count_plus_burst_across_workers(
    rate: RateLimit, workers: int, lanes: int
) -> None:
    """Late wake-ups, moves and lost slots included, no period holds more than count + burst starts."""
    starts = 6 * (rate.count + rate.burst)
    started, limiters = await run_workers(
        rate, workers=workers, lanes=lanes, starts=starts, seed=7
    )
    assert busiest_window(started, rate.period) <= rate.count + rate.burst
    # The late path was taken (moves, or slots lost when they could not move).
    assert sum(limiter.moved + limiter.missed for limiter in limiters) > 0
    # Stronger: starts late by up to the lateness allowed leave the rest of
    # the margin to the network and the server.
    window = rate.period * (1 + MARGIN - LATENESS) - 1e-9
    assert busiest_window(started, window) <= rate.count + rate.burst


async def test_moving_late_slots_keeps_more_of_the_rate_than_losing_them() -> None:
    """Same late wake-ups: moving late slots gives a higher mean than giving every late one up."""

    async def mean(moves: bool) -> float:
        started, _ = await run_workers(
            RateLimit(50, 1.0), workers=2, lanes=10, starts=1500, seed=3, moves=moves
        )
        return (len(started) - 1) / (max(started) - min(started))

    moved, lost = await mean(moves=True), await mean(moves=False)
    assert moved > 1.05 * lost
    assert moved <= 50
