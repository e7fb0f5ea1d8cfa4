"""LocalRateLimiter on a fake clock: the window bound, the mean, bursts, slowing down."""

from __future__ import annotations

import bisect
import logging
import random

import pytest

from mailer.config.rates import RateLimit, parse_rate_limit
from mailer.replies import Reply, is_rate_refusal
from mailer.transports.ratelimit import MAX_SLOWDOWN, LocalRateLimiter, RateLimiter

REFUSAL = Reply(421, "4.7.0 rate limit exceeded")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def busiest_window(times: list[float], period: float) -> int:
    ordered = sorted(times)
    return max(
        bisect.bisect_left(ordered, t + period) - i for i, t in enumerate(ordered)
    )


def run_backlog(
    limiter: LocalRateLimiter, clock: Clock, starts: int, lateness: float, seed: int = 1
) -> list[float]:
    """Start ``starts`` transactions as soon as allowed, each waking up late by up to ``lateness``."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible lateness, not a secret
    times: list[float] = []
    while len(times) < starts:
        clock.now += limiter.delay() + rng.uniform(0, lateness)
        if limiter.try_acquire():
            times.append(clock.now)
    return times


def test_limiter_is_a_rate_limiter() -> None:
    """LocalRateLimiter satisfies the RateLimiter protocol the SMTP lanes use."""
    assert isinstance(LocalRateLimiter(None), RateLimiter)


def test_no_limit_always_admits() -> None:
    """Without a rate, every try succeeds at once and nothing waits."""
    clock = Clock()
    limiter = LocalRateLimiter(None, clock=clock)
    assert all(limiter.try_acquire() for _ in range(1000))
    assert limiter.delay() == 0


def test_starts_are_spaced_by_the_interval_plus_the_margin() -> None:
    """At 10/s one start is allowed, the next only 1.015/10 s later."""
    clock = Clock()
    limiter = LocalRateLimiter(RateLimit(10, 1.0), clock=clock)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.delay() == pytest.approx(0.1015)
    clock.now += 0.1
    assert not limiter.try_acquire()
    clock.now += 0.0015
    assert limiter.try_acquire()


@pytest.mark.parametrize(
    ("rate", "lateness"),
    [
        (RateLimit(50, 1.0), 0.0),
        (RateLimit(50, 1.0), 0.015),
        (RateLimit(50, 1.0, burst=10), 0.03),
        (RateLimit(600, 60.0), 0.2),
        (RateLimit(7, 1.0, burst=3), 0.5),
    ],
)
def test_no_window_holds_more_than_count_plus_burst(
    rate: RateLimit, lateness: float
) -> None:
    """However late the waiters wake up, no window of the period holds more than count + burst."""
    clock = Clock()
    limiter = LocalRateLimiter(rate, clock=clock)
    times = run_backlog(limiter, clock, rate.count * 6, lateness)
    assert busiest_window(times, rate.period) <= rate.count + rate.burst
    # ...nor a window 1% longer (what absorbs the server's jitter).
    assert busiest_window(times, rate.period * 1.01) <= rate.count + rate.burst


@pytest.mark.parametrize(
    ("lateness", "shortfall"), [(0.0, 0.016), (0.004, 0.016), (0.01, 0.02)]
)
def test_mean_stays_near_the_limit_when_waiters_wake_late(
    lateness: float, shortfall: float
) -> None:
    """Waking up a few ms late keeps the mean within 1.6% of 50/s (2% at up to 10 ms)."""
    clock = Clock()
    limiter = LocalRateLimiter(RateLimit(50, 1.0), clock=clock)
    times = run_backlog(limiter, clock, 1500, lateness)
    mean = (len(times) - 1) / (times[-1] - times[0])
    assert 50 * (1 - shortfall) <= mean <= 50.0


def test_burst_after_idle_then_paced() -> None:
    """With burst=3, four start at once after an idle spell, then one per interval."""
    clock = Clock()
    limiter = LocalRateLimiter(RateLimit(10, 1.0, burst=3), clock=clock)
    assert [limiter.try_acquire() for _ in range(5)] == [True] * 4 + [False]
    clock.now += 0.1015
    assert limiter.try_acquire()
    assert not limiter.try_acquire()


def test_idle_spell_gives_no_extra_start() -> None:
    """After an hour idle a 10/s limit without burst still admits one start, not two."""
    clock = Clock()
    limiter = LocalRateLimiter(RateLimit(10, 1.0), clock=clock)
    limiter.try_acquire()
    clock.now += 3600
    assert [limiter.try_acquire() for _ in range(2)] == [True, False]


async def test_rate_refusal_halves_the_rate_and_pauses() -> None:
    """A refusal doubles the interval and nothing starts for one new interval."""
    clock = Clock()
    limiter = LocalRateLimiter(RateLimit(10, 1.0), clock=clock, cooldown=60)
    assert limiter.try_acquire()
    await limiter.record_refusal(REFUSAL, generation=limiter.generation)
    assert limiter.interval == pytest.approx(0.203)
    assert limiter.is_slowed
    clock.now += 0.2
    assert not limiter.try_acquire()
    clock.now += 0.11
    assert limiter.try_acquire()


async def test_refusal_of_an_older_transaction_does_not_halve_again() -> None:
    """Refusals of transactions handed over before the slow-down count once, not each."""
    clock = Clock()
    limiter = LocalRateLimiter(RateLimit(100, 1.0), clock=clock)
    before = limiter.generation
    for _ in range(5):
        await limiter.record_refusal(REFUSAL, generation=before)
    assert limiter.interval == pytest.approx(0.0203)
    await limiter.record_refusal(REFUSAL, generation=limiter.generation)
    assert limiter.interval == pytest.approx(0.0406)


async def test_slow_down_stops_at_one_sixteenth() -> None:
    """Halvings stop at 1/2**MAX_SLOWDOWN of the limit."""
    clock = Clock()
    limiter = LocalRateLimiter(RateLimit(160, 1.0, burst=5), clock=clock)
    for _ in range(10):
        await limiter.record_refusal(REFUSAL, generation=limiter.generation)
    assert limiter.interval == pytest.approx(1.015 / 160 * 2**MAX_SLOWDOWN)


async def test_rate_doubles_back_after_each_quiet_cooldown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each cool-down without a refusal doubles the rate, up to the limit again."""
    caplog.set_level(logging.INFO, logger="mailer.ratelimit")
    clock = Clock()
    limiter = LocalRateLimiter(
        RateLimit(10, 1.0), clock=clock, cooldown=30, name="a:25"
    )
    await limiter.record_refusal(REFUSAL, generation=limiter.generation)
    await limiter.record_refusal(REFUSAL, generation=limiter.generation)
    assert limiter.interval == pytest.approx(0.406)
    clock.now += 29.9
    assert limiter.delay() >= 0
    assert limiter.interval == pytest.approx(0.406)
    clock.now += 0.2
    limiter.delay()
    assert limiter.interval == pytest.approx(0.203)
    clock.now += 30
    assert not limiter.is_slowed
    assert limiter.interval == pytest.approx(0.1015)
    assert (
        "relay a:25 refused a transaction for its rate (421 4.7.0 rate limit exceeded)"
        in caplog.text
    )
    assert "rate back to 9.85/s" in caplog.text


async def test_relay_without_limit_slows_to_half_its_observed_rate() -> None:
    """With no limit, a refusal limits the relay to half the rate of its last second."""
    clock = Clock()
    limiter = LocalRateLimiter(None, clock=clock, cooldown=10)
    for _ in range(100):  # 100 starts over the last second: 100/s
        clock.now += 0.01
        assert limiter.try_acquire()
    await limiter.record_refusal(REFUSAL, generation=limiter.generation)
    assert limiter.interval == pytest.approx(0.02, rel=0.02)
    clock.now += 10.001
    assert limiter.interval is None  # back to no limit


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(421, "4.7.0 rate limit exceeded"), True),
        (Reply(421, "4.3.2 Service shutting down"), False),
        (Reply(421, "4.7.28 Our system has detected an unusual rate"), True),
        (Reply(421, "4.7.0 Try again later, closing connection"), True),
        (Reply(421, "Too many messages, slow down"), True),
        (Reply(454, "Throttling failure: Maximum sending rate exceeded."), True),
        (Reply(451, "4.7.1 Too many messages, slow down"), True),
        (Reply(450, "4.7.28 unusual rate of unsolicited mail"), True),
        (Reply(451, "4.7.1 Greylisted, please try again later"), False),
        (Reply(452, "4.5.3 Too many recipients"), False),
        (Reply(550, "5.7.1 rate limit, go away"), False),
        (Reply(451, "4.3.0 Temporary failure"), False),
    ],
)
def test_rate_refusals_are_told_from_other_transient_replies(
    reply: Reply, expected: bool
) -> None:
    """421 4.7.x always; 421/451/454/4.7.x when the text speaks of a rate; never 5xx."""
    assert is_rate_refusal(reply) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/s", RateLimit(100, 1.0)),
        ("600/min", RateLimit(600, 60.0)),
        ("5000/h", RateLimit(5000, 3600.0)),
        ("20000/day", RateLimit(20000, 86400.0)),
        ("50/s burst=10", RateLimit(50, 1.0, 10)),
        (" 50 / sec , burst = 10 ", RateLimit(50, 1.0, 10)),
        ("3/Minute", RateLimit(3, 60.0)),
    ],
)
def test_rate_limits_parse(text: str, expected: RateLimit) -> None:
    """Counts per s/min/h/day, with an optional burst, in a few spellings."""
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize(
    "text", ["100", "100/week", "x/s", "-1/s", "50/s burst", "50/s+10", "0/s"]
)
def test_bad_rate_limits_are_refused(text: str) -> None:
    """Anything else is a ValueError that says what is expected."""
    with pytest.raises(ValueError, match=r"(count per unit|at least 1)"):
        parse_rate_limit(text)
