"""Rate limits against a real SMTP server that timestamps every transaction it gets."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

from mailer import MailerSettings, Message, MessageClient, SendStatus

from .conftest import ScriptedServer


def busiest_window(times: list[float], period: float) -> int:
    """Return the most timestamps in any half-open window of ``period`` seconds."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + period) - i for i, t in enumerate(ordered)),
        default=0,
    )


def mean_rate(times: list[float]) -> float:
    """Return the starts per second from the first to the last."""
    ordered = sorted(times)
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


class Stamps:
    """An ``answer`` for ScriptedServer: stamps each MAIL; refuses every nth with 421."""

    def __init__(self, refuse_every: int = 0) -> None:
        self.refuse_every = refuse_every
        self.mails: list[float] = []  # every MAIL, as the server read it
        self.accepted: list[float] = []  # the MAILs it did not refuse
        self.refused: list[float] = []

    def __call__(self, line: str) -> str | None:
        if not line.upper().startswith("MAIL"):
            return None
        now = time.monotonic()
        self.mails.append(now)
        if self.refuse_every and len(self.mails) % self.refuse_every == 0:
            self.refused.append(now)
            return "421 4.7.0 rate limit exceeded"
        self.accepted.append(now)
        return None


async def test_rate_limit_holds_in_every_window_at_the_server(
    scripted_server: Callable[..., ScriptedServer],
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """At 20/s with a backlog and 10 connections the server never sees more than 20 in a second, and 20/s on average."""
    stamps = Stamps()
    async with scripted_server(answer=stamps) as server:
        settings = settings_on(server.port, rate_limit="20/s", concurrency=10)
        async with MessageClient(settings) as client:
            results = await client.send_many([mail(n) for n in range(70)])
    assert all(r.status is SendStatus.SENT for r in results)
    assert len(stamps.accepted) == 70
    assert busiest_window(stamps.accepted, 1.0) <= 20
    # The mean within 2% is benchmarks/rate_limit.py's check (30 s, quiet
    # machine); here it only has to be the limit's, not a fraction of it.
    assert 16 <= mean_rate(stamps.accepted) <= 20


async def test_burst_goes_at_once_and_the_window_still_holds(
    scripted_server: Callable[..., ScriptedServer],
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """With burst=5, six start at once, and no second-long window holds more than 20 + 5."""
    stamps = Stamps()
    async with scripted_server(answer=stamps) as server:
        settings = settings_on(server.port, rate_limit="20/s burst=5", concurrency=10)
        async with MessageClient(settings) as client:
            await client.send_many([mail(n) for n in range(60)])
    assert len(stamps.accepted) == 60
    assert stamps.accepted[5] - stamps.accepted[0] < 0.1  # the burst: 1 + 5
    assert stamps.accepted[6] - stamps.accepted[0] > 0.04  # then one per 50 ms
    assert busiest_window(stamps.accepted, 1.0) <= 25
    assert 16 <= mean_rate(stamps.accepted[6:]) <= 20


async def test_rate_per_relay_from_the_dsn(
    scripted_server: Callable[..., ScriptedServer],
    make_settings: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """?rate= on a relay of MAILER_DSN limits that relay (round robin over two)."""
    fast, slow = Stamps(), Stamps()
    async with scripted_server(answer=fast) as a, scripted_server(answer=slow) as b:
        settings = make_settings(
            dsn=f"roundrobin(smtp://127.0.0.1:{a.port}?tls=none "
            f"smtp://127.0.0.1:{b.port}?tls=none&rate=10/s)",
            timeout=5,
        )
        async with MessageClient(settings) as client:
            started = time.monotonic()
            await client.send_many([mail(n) for n in range(24)])
            elapsed = time.monotonic() - started
    assert len(fast.accepted) == len(slow.accepted) == 12
    assert busiest_window(slow.accepted, 1.0) <= 10
    assert busiest_window(fast.accepted, 0.1) == 12  # no limit there
    assert elapsed > 1.0  # the limited relay's 12 messages take 1.1 s


async def test_rate_refusals_slow_the_relay_and_every_message_is_sent(
    scripted_server: Callable[..., ScriptedServer],
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """421 "4.7.0 rate limit exceeded" to every 10th MAIL: all 60 end sent, and the server sees the rate drop."""
    stamps = Stamps(refuse_every=10)
    async with scripted_server(answer=stamps) as server:
        settings = settings_on(
            server.port, rate_limit="100/s", rate_cooldown=60, concurrency=10
        )
        async with MessageClient(settings) as client:
            results = await client.send_many([mail(n) for n in range(60)])
    assert [r.status for r in results] == [SendStatus.SENT] * 60
    assert sum(r.attempts for r in results) == 60 + len(stamps.refused)
    first_refusal = stamps.refused[0]
    before = [t for t in stamps.mails if t <= first_refusal]
    after = [t for t in stamps.mails if t > first_refusal]
    assert busiest_window(before, 1.0) <= 100
    assert busiest_window(after, 1.0) <= 50  # halved at least once
    assert mean_rate(after) < mean_rate(before)


async def test_rate_refusal_slows_a_relay_with_no_limit(
    scripted_server: Callable[..., ScriptedServer],
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """Without MAILER_RATE_LIMIT, a 421 rate refusal still slows the relay below the rate it had."""
    stamps = Stamps(refuse_every=20)
    async with scripted_server(answer=stamps) as server:
        settings = settings_on(server.port, rate_cooldown=60, concurrency=5)
        async with MessageClient(settings) as client:
            results = await client.send_many([mail(n) for n in range(30)])
    assert all(r.status is SendStatus.SENT for r in results)
    first_refusal = stamps.refused[0]
    before = [t for t in stamps.mails if t < first_refusal]
    after = [t for t in stamps.mails if t > first_refusal]
    assert len(after) >= 5
    assert mean_rate(after) < mean_rate(before) / 1.5
