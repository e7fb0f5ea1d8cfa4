"""Spread deliveries over several relays: in order (failover) or in rotation.

A relay that fails transiently (it cannot be reached, times out, or answers
4xx to the transaction) is skipped for a cool-down period and the next one is
tried at once. Other failures are not failed over:

* a refused login or a TLS failure is a configuration error: it is raised,
  naming the relay, so that it is fixed rather than hidden behind another
  relay (and a wrong password is not tried on every relay);
* a 5xx refusal is about the message, which another relay would refuse too;
* a failure after the content was sent may have delivered the message: it is
  raised as ambiguous, and the retry policy resends it later, counted;
* per-recipient refusals are data about the recipients, not the relay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

from mailer.content.message import Envelope
from mailer.exceptions import (
    DeliveryError,
    RecipientsRefusedError,
    RelaysUnavailableError,
)
from mailer.replies import Verdict, classify_error
from mailer.transports.base import (
    BaseTransport,
    Delivery,
    DeliveryProgress,
    Transport,
    reports_progress,
)

FailoverMode = Literal["failover", "roundrobin"]


def fails_over(error: DeliveryError) -> bool:
    """Return whether ``error`` says the relay, not the message, is in trouble."""
    return (
        classify_error(error) is Verdict.TRANSIENT
        and not error.ambiguous
        and not isinstance(error, RecipientsRefusedError)
    )


class FailoverTransport(BaseTransport):
    """Deliver through the first healthy relay of a list.

    Args:
        relays: ``(name, transport)`` pairs; the name (``host:port``) is used in
            messages.
        mode: ``failover`` tries relays in the order given; ``roundrobin``
            starts each delivery at the next relay in turn.
        cooldown: Seconds a relay that failed transiently is tried only after
            the healthy ones.
        clock: Monotonic clock (replaced in tests).
    """

    def __init__(
        self,
        relays: Sequence[tuple[str, Transport]],
        *,
        mode: FailoverMode = "failover",
        cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not relays:
            raise ValueError("FailoverTransport needs at least one relay")
        self.relays = list(relays)
        self.mode = mode
        self.cooldown = cooldown
        self._clock = clock
        self._cooling_until: dict[int, float] = {}
        self._turn = 0

    def cooling(self) -> list[str]:
        """Return the names of the relays in their cool-down period now."""
        now = self._clock()
        return [
            self.relays[index][0]
            for index, until in sorted(self._cooling_until.items())
            if until > now
        ]

    def _order(self) -> list[int]:
        count = len(self.relays)
        start = 0
        if self.mode == "roundrobin":
            start, self._turn = self._turn, (self._turn + 1) % count
        order = [(start + offset) % count for offset in range(count)]
        now = self._clock()
        ready = [i for i in order if self._cooling_until.get(i, 0.0) <= now]
        # When every relay is cooling down, still try them all: the soonest
        # to recover first. Refusing to try would turn a blip into a failure.
        cooling = sorted(
            (i for i in order if i not in ready), key=self._cooling_until.__getitem__
        )
        return ready + cooling

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Send one message through the first relay that takes it.

        Raises:
            RelaysUnavailableError: Every relay failed transiently.
            DeliveryError: A failure that is not failed over (see the module).
        """
        return await self.deliver_with_progress(envelope, content, DeliveryProgress())

    async def deliver_with_progress(
        self, envelope: Envelope, content: bytes, progress: DeliveryProgress, /
    ) -> Delivery:
        """Deliver like ``deliver``, passing ``progress`` to the relay that sends.

        A relay that does not report progress is assumed to start the content
        at once.
        """
        errors: dict[str, DeliveryError] = {}
        for index in self._order():
            name, transport = self.relays[index]
            try:
                if reports_progress(transport):
                    delivery = await transport.deliver_with_progress(
                        envelope, content, progress
                    )
                else:
                    progress.content_starting()
                    delivery = await transport.deliver(envelope, content)
            except DeliveryError as exc:
                if not fails_over(exc):
                    raise
                self._cooling_until[index] = self._clock() + self.cooldown
                errors[name] = exc
                continue
            self._cooling_until.pop(index, None)
            return delivery
        raise RelaysUnavailableError(errors)

    async def aclose(self) -> None:
        """Close every relay's transport."""
        for _, transport in self.relays:
            await transport.aclose()
