"""A lane readies its connection before it waits for its rate-limit turn (no sockets)."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailer.config.settings import MailerSettings
from mailer.content.message import Envelope
from mailer.replies import Reply
from mailer.transports.smtp.connection import SMTPConnection
from mailer.transports.smtp.lane import Lane
from mailer.transports.smtp.transactions import (
    PoolLimits,
    Transaction,
    TransactionQueue,
)


class TurnTakenError(Exception):
    """Raised by the gate when the lane takes its turn: the test has seen enough."""


class RecordingConnection(SMTPConnection):
    """Opens at once and records it; never touches a socket."""

    def __init__(
        self, settings: MailerSettings, events: list[str], number: int
    ) -> None:
        super().__init__(settings)
        self.events = events
        self.number = number

    async def open(self) -> None:
        self.events.append(f"open {self.number}")
        self.opened_at = time.monotonic()

    def close(self, *, say_quit: bool = False) -> None:
        self.events.append(f"close {self.number}")


class RecordingGate:
    """A RateLimiter that records the lane's calls and waits as long as told."""

    generation = 0

    def __init__(self, events: list[str], waited: float) -> None:
        self.events = events
        self.waited = waited

    async def wait_ready(self) -> float:
        self.events.append("wait")
        return self.waited

    def try_acquire(self) -> bool:
        self.events.append("turn")
        raise TurnTakenError

    async def record_refusal(self, reply: Reply, /, *, generation: int) -> None:
        raise AssertionError("no refusal here")


async def lane_events(settings: MailerSettings, waited: float) -> list[str]:
    """Queue one transaction on a lane with a RecordingGate; return what happened."""
    events: list[str] = []
    queue = TransactionQueue()
    count = iter(range(1, 10))

    def new_connection() -> SMTPConnection:
        return RecordingConnection(settings, events, next(count))

    lane = Lane(
        queue,
        new_connection,
        PoolLimits(size=1, max_idle=10.0),
        5.0,
        5.0,
        gate=RecordingGate(events, waited),
    )
    task = asyncio.create_task(lane.run())
    transaction = Transaction(Envelope("a@example.test", ("b@example.test",)), b"x\r\n")
    queue.put(transaction)
    with pytest.raises(TurnTakenError):
        await asyncio.wait_for(transaction.outcome, 5)
    task.cancel()
    await asyncio.wait([task], timeout=5)
    return events


async def test_the_connection_is_ready_before_the_wait_for_a_turn(
    settings: MailerSettings,
) -> None:
    """Open, then wait, then take the turn: a turn reserved ahead is not spent connecting."""
    events = await lane_events(settings, waited=0.0)
    assert events[:3] == ["open 1", "wait", "turn"]


async def test_a_wait_longer_than_max_idle_gets_a_fresh_connection_before_the_turn(
    settings: MailerSettings,
) -> None:
    """After a wait the server may have dropped the connection over: a new one, then the turn."""
    events = await lane_events(settings, waited=11.0)
    assert events[:5] == ["open 1", "wait", "close 1", "open 2", "turn"]
