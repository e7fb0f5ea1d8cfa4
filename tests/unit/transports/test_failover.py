"""FailoverTransport over mock relays: order, rotation, cool-down, what is not failed over."""

from __future__ import annotations

import pytest

from mailer import (
    AuthenticationError,
    ConnectError,
    DataRefusedError,
    DeliveryTimeoutError,
    Envelope,
    RecipientsRefusedError,
    RejectedError,
    Reply,
    TLSError,
)
from mailer.exceptions import DeliveryError, RelaysUnavailableError
from mailer.testing import SentMail
from mailer.transports import MockTransport
from mailer.transports.failover import FailoverTransport

ENVELOPE = Envelope("shop@example.test", ("ann@example.test",))
CONTENT = b"Subject: hi\r\n\r\nhello\r\n"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def relay(error: DeliveryError | None = None) -> MockTransport:
    """A relay that accepts everything, or raises ``error`` every time."""

    def handle(mail: SentMail) -> None:
        if error is not None:
            raise error

    return MockTransport(handle)


def down() -> ConnectError:
    return ConnectError("cannot reach a.example.test:25: refused", transient=True)


def failover(*relays: MockTransport, **options: object) -> FailoverTransport:
    named = [(f"r{n}.example.test:25", t) for n, t in enumerate(relays, 1)]
    return FailoverTransport(named, **options)  # type: ignore[arg-type]


async def test_the_first_healthy_relay_takes_the_message() -> None:
    """Relay 1 is down: relay 2 gets it, relay 3 is not touched."""
    first, second, third = relay(down()), relay(), relay()
    delivery = await failover(first, second, third).deliver(ENVELOPE, CONTENT)
    assert delivery.accepted == ("ann@example.test",)
    assert (len(first.outbox), len(second.outbox), len(third.outbox)) == (1, 1, 0)


@pytest.mark.parametrize(
    "error",
    [
        down(),
        DeliveryTimeoutError("r1 did not answer in time", transient=True),
        RejectedError("r1 answered 421 4.7.0 try later", transient=True),
    ],
)
async def test_transient_relay_failures_fail_over(error: DeliveryError) -> None:
    """Unreachable, timed out, or 421/451 to the transaction: the next relay."""
    first, second = relay(error), relay()
    await failover(first, second).deliver(ENVELOPE, CONTENT)
    assert len(second.outbox) == 1


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("r1.example.test:25 refused the login: 535 5.7.8 no"),
        TLSError("TLS with r1.example.test:25 failed: certificate not trusted"),
        DataRefusedError("r1 refused the message: 554 5.7.1 spam"),
        ConnectError("r1 closed the connection", transient=True, ambiguous=True),
        RecipientsRefusedError(
            "452 for everyone",
            refused={"ann@example.test": Reply(452, "4.5.3 too many")},
            transient=True,
        ),
    ],
    ids=["auth", "tls", "5xx", "after-the-dot", "recipients"],
)
async def test_what_is_not_about_the_relay_is_raised_not_failed_over(
    error: DeliveryError,
) -> None:
    """A bad login, TLS, a 5xx, an ambiguous end, per-recipient refusals: raised."""
    first, second = relay(error), relay()
    with pytest.raises(type(error)) as caught:
        await failover(first, second).deliver(ENVELOPE, CONTENT)
    assert caught.value is error
    assert second.outbox == []


async def test_a_failing_relay_is_skipped_during_its_cooldown() -> None:
    """After failing, relay 1 is tried last until the cool-down ends."""
    clock = Clock()
    outcomes: list[DeliveryError | None] = [down()]

    def first_handler(mail: SentMail) -> None:
        error = outcomes.pop(0) if outcomes else None
        if error is not None:
            raise error

    first, second = MockTransport(first_handler), relay()
    transport = failover(first, second, cooldown=60, clock=clock)
    await transport.deliver(ENVELOPE, CONTENT)
    assert transport.cooling() == ["r1.example.test:25"]
    await transport.deliver(ENVELOPE, CONTENT)
    assert (len(first.outbox), len(second.outbox)) == (1, 2)
    clock.now += 61
    assert transport.cooling() == []
    await transport.deliver(ENVELOPE, CONTENT)
    assert (len(first.outbox), len(second.outbox)) == (2, 2)


async def test_when_every_relay_cools_down_they_are_still_tried() -> None:
    """All in cool-down: try the soonest to recover rather than fail untried."""
    clock = Clock()
    first, second = relay(down()), relay(down())
    transport = failover(first, second, cooldown=60, clock=clock)
    with pytest.raises(RelaysUnavailableError):
        await transport.deliver(ENVELOPE, CONTENT)
    with pytest.raises(RelaysUnavailableError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert (len(first.outbox), len(second.outbox)) == (2, 2)
    assert caught.value.transient is True
    assert list(caught.value.errors) == ["r1.example.test:25", "r2.example.test:25"]
    assert str(caught.value).startswith("every relay failed (2): cannot reach")


async def test_round_robin_starts_at_the_next_relay_each_time() -> None:
    """roundrobin spreads messages: 1, 2, 3, 1, ..."""
    relays = [relay(), relay(), relay()]
    transport = failover(*relays, mode="roundrobin")
    for _ in range(7):
        await transport.deliver(ENVELOPE, CONTENT)
    assert [len(r.outbox) for r in relays] == [3, 2, 2]


async def test_round_robin_passes_over_a_dead_relay() -> None:
    """A dead relay in the rotation: its turn goes to the next one."""
    relays = [relay(), relay(down()), relay()]
    transport = failover(*relays, mode="roundrobin", cooldown=60, clock=Clock())
    for _ in range(6):
        await transport.deliver(ENVELOPE, CONTENT)
    assert len(relays[1].outbox) == 1  # tried once, then cooling down
    assert len(relays[0].outbox) + len(relays[2].outbox) == 6


async def test_closing_closes_every_relay() -> None:
    """aclose reaches each relay's transport."""
    closed: list[int] = []

    class Closing(MockTransport):
        def __init__(self, number: int) -> None:
            super().__init__(lambda mail: None)
            self.number = number

        async def aclose(self) -> None:
            closed.append(self.number)

    await failover(Closing(1), Closing(2)).aclose()
    assert closed == [1, 2]


def test_a_failover_needs_a_relay() -> None:
    """An empty list is a programming error, caught at once."""
    with pytest.raises(ValueError, match="at least one relay"):
        FailoverTransport([])
