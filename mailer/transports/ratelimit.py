"""Pace each relay's transactions: a rate limit checked before each one starts.

Every relay (each ``SMTPTransport``) has a ``RateLimiter``, shared by all its
connections. A connection asks for a turn with its connection ready, right
before it writes MAIL FROM, so neither a queue nor a reconnect can bunch
starts up after the check: the limit is never overshot, rather than
corrected after the fact (Nodemailer's pool counts after a send and lets
bursts through, nodemailer#768).

``LocalRateLimiter`` keeps the limit in this process. It is the generic cell
rate algorithm (GCRA, a token bucket kept as one time stamp): with a rate of
``count`` per ``period`` and a ``burst``, a start is allowed when the
theoretical time of the next start, less ``burst`` intervals, has come. In
any window of ``period`` seconds at most ``count + burst`` transactions
start, and over a long run ``count`` per ``period``. Two details keep the
promise at the server too, and the mean on target:

* a log of the last ``count + burst`` starts: a start is refused while it
  would make ``count + burst + 1`` in one window. This is what makes the
  bound exact, whatever the scheduling does.
* lateness credit: a connection that wakes up late for its turn (the event
  loop was busy) does not push every later turn back, up to one interval
  late; the next turn comes sooner, as far as the log allows. Without it the
  mean would drift down by the loop's lateness on every start.
* ``MARGIN``: the steady rate is 1.5 % under the limit, and the log's
  window 1 % longer than the period. The server's clock sees each start a
  little later than ours, by a varying delay (the network, its own
  scheduling): the log's 1 % absorbs up to 1 % of the period (10 ms for
  1 s windows) of that variation, so the server never counts one start too
  many; the other half percent is slack between the schedule and the log, so
  that a start a few milliseconds late is not held back again a period
  later (which would compound and drag the mean down).

It also slows down on its own when the server says the client is too fast
(``mailer.replies.is_rate_refusal``: any 421, or a 4.7.x/451/454 reply about
a rate). Reasoning: the server's real limit is unknown and may be shared
with other senders, so the reaction is multiplicative, as TCP's congestion
control is: each refusal halves the relay's rate (a relay with no limit set
starts from the rate measured over the last second) and pauses it for one
new interval. Only a refusal of a transaction handed over *after* the last
slow-down halves it again (the others were sent at the old rate), down to
``1/2**MAX_SLOWDOWN``. After ``cooldown`` seconds without a refusal the rate
doubles back, one step per ``cooldown``, so a provider that throttles for
minutes is not hit again at full speed at once. The refused message itself is
retried by the client's retry policy (a 4xx is transient).

A limit shared by several processes (queue workers on several hosts) is
another ``RateLimiter``: ``wait_ready`` may reserve a turn in shared storage
and ``try_acquire`` then takes the reserved turn. ``transport_from_settings``
takes a ``LimiterFactory`` that makes one per relay (``mailer worker`` passes
the queue's, ``mailer.queue.ratelimit``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from mailer.config.rates import RateLimit
from mailer.replies import Reply

if TYPE_CHECKING:
    from mailer.config.settings import MailerSettings

logger = logging.getLogger("mailer.ratelimit")

# Starts are spaced as if the period were this much longer (see the module).
MARGIN = 0.015
# A rate refusal halves the rate; this many halvings at most (1/16).
MAX_SLOWDOWN = 4
# A relay with no limit set is slowed from the rate of its last second.
OBSERVED_WINDOW = 1.0
OBSERVED_SPAN = 0.1
_RECENT_STARTS = 4096
# Limits up to this count (plus burst) keep a log of their last starts.
MAX_LOGGED_STARTS = 100_000


@runtime_checkable
class RateLimiter(Protocol):
    """Decide when the transactions of one relay may start.

    Used by every connection to the relay: a connection awaits
    ``wait_ready()``, makes its connection ready, then calls
    ``try_acquire()`` just before it writes MAIL FROM, and tries again if
    another connection took the turn meanwhile. A transport tells it about
    refusals with ``record_refusal``.
    """

    @property
    def generation(self) -> int:
        """Return a number that changes at each slow-down."""
        ...

    async def wait_ready(self) -> float:
        """Wait until a transaction may probably start; return the seconds waited."""
        ...

    def try_acquire(self) -> bool:
        """Take the turn to start a transaction now, if there is one; never waits."""
        ...

    async def record_refusal(self, reply: Reply, /, *, generation: int) -> None:
        """Hear that the server refused a transaction for its rate.

        Args:
            reply: The refusal.
            generation: ``generation`` when the transaction was handed over.
        """
        ...


# Makes the limiter of one relay from that relay's settings.
LimiterFactory: TypeAlias = Callable[["MailerSettings"], RateLimiter]


class LocalRateLimiter:
    """A relay's rate limit kept in this process (GCRA), slowing down on refusals.

    Args:
        rate: The limit; ``None`` for none (it still slows down on refusals).
        cooldown: Seconds without a refusal before a slowed rate doubles back.
        name: The relay (``host:port``), for log messages.
        clock: Monotonic clock (replaced in tests).
        margin: Extra spacing, as a fraction of the period (see the module).
    """

    def __init__(
        self,
        rate: RateLimit | None,
        *,
        cooldown: float = 60.0,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        margin: float = MARGIN,
    ) -> None:
        self.rate = rate
        self.cooldown = cooldown
        self.name = name
        self._clock = clock
        self._base: float | None = None
        self._period = 1.0
        self._burst = 0
        if rate is not None:
            self._base = rate.interval * (1 + margin)
            self._period = rate.period
            self._burst = rate.burst
        self._tat = -math.inf  # when the next start is due, at the steady rate
        # The last count + burst starts: no window of the period (plus the
        # margin) may hold one more. Kept only for limits of a sane size;
        # larger ones rely on the GCRA alone, with a smaller lateness credit.
        self._window = self._period * (1 + margin * 2 / 3)
        self._log: deque[float] | None = None
        self._credit_cap = margin * self._period / 3
        if rate is not None and rate.count + rate.burst <= MAX_LOGGED_STARTS:
            self._log = deque(maxlen=rate.count + rate.burst)
            self._credit_cap = math.inf
        self._halvings = 0
        self._measured: float | None = None  # the base of a relay with no limit
        self._step_at = math.inf  # when a slowed rate next doubles back
        self._recent: deque[float] = deque(maxlen=_RECENT_STARTS)
        self._generation = 0

    @property
    def generation(self) -> int:
        """Return a number that changes at each slow-down."""
        return self._generation

    @property
    def interval(self) -> float | None:
        """Return the seconds between starts now, or None when nothing limits them."""
        self._recover(self._clock())
        base = self._base if self._measured is None else self._measured
        if base is None:
            return None
        return base * (1 << self._halvings)

    @property
    def is_slowed(self) -> bool:
        """Return whether a rate refusal is slowing the relay now."""
        self._recover(self._clock())
        return self._halvings > 0

    def delay(self) -> float:
        """Return the seconds until a transaction may start (0: now)."""
        now = self._clock()
        self._recover(now)
        interval = self.interval
        if interval is None:
            return 0.0
        due = self._tat - self._tolerance(interval)
        log = self._log
        if log is not None and len(log) == log.maxlen:
            due = max(due, log[0] + self._window)
        return max(0.0, due - now)

    async def wait_ready(self) -> float:
        """Wait until a transaction may start; return the seconds waited."""
        started = self._clock()
        # The turn's time is known, so sleeping until it is the exact wait;
        # the loop re-checks in case a slow-down moved it meanwhile.
        while (delay := self.delay()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)
        return self._clock() - started

    def try_acquire(self) -> bool:
        """Take the turn to start a transaction now, if there is one."""
        now = self._clock()
        self._recover(now)
        interval = self.interval
        if interval is not None:
            if self._tat - self._tolerance(interval) > now:
                return False
            log = self._log
            if log is not None:
                if len(log) == log.maxlen and log[0] + self._window > now:
                    return False
                log.append(now)
            # Waking up late for a turn keeps the schedule (up to one interval
            # late), so the mean does not drift down with the loop's lateness;
            # after an idle spell the schedule starts again from now.
            late = now - self._tat
            if late > min(interval, self._credit_cap):
                self._tat = now
            self._tat += interval
        if self._base is None:
            self._recent.append(now)  # to slow a relay with no limit from its rate
        return True

    async def acquire(self) -> None:
        """Wait for the turn to start a transaction, and take it."""
        while not self.try_acquire():
            await self.wait_ready()

    async def record_refusal(self, reply: Reply, /, *, generation: int) -> None:
        """Slow down: halve the rate and pause, unless already done for this rate.

        Args:
            reply: The refusal, for the log.
            generation: ``generation`` when the refused transaction was handed
                over; a refusal of one handed over before the last slow-down
                only restarts the cool-down.
        """
        now = self._clock()
        self._recover(now)
        if generation != self._generation:
            if self._halvings:
                self._step_at = now + self.cooldown
            return
        self._step_at = now + self.cooldown
        if self._halvings == MAX_SLOWDOWN:
            # As slow as it goes: pause again, keep the rate, say it once.
            interval = self.interval
            assert interval is not None  # noqa: S101 - slowed down before
            self._tat = max(self._tat, now) + interval
            return
        if self.interval is None:
            self._measured = self._observed_interval(now)
        self._halvings += 1
        self._generation += 1
        interval = self.interval
        assert interval is not None  # noqa: S101 - measured just above
        self._tat = max(self._tat, now) + interval  # a pause of one new interval
        logger.warning(
            "relay %s refused a transaction for its rate (%s): slowing it to "
            "%s for %gs",
            self.name or "?",
            reply,
            _per_second(interval),
            self.cooldown,
            extra={"relay": self.name, "reply_code": reply.code},
        )

    def _tolerance(self, interval: float) -> float:
        # No burst while the server is refusing us.
        return self._burst * interval if self._halvings == 0 else 0.0

    def _recover(self, now: float) -> None:
        while self._halvings and now >= self._step_at:
            self._halvings -= 1
            self._step_at += self.cooldown
            if self._halvings == 0:
                self._measured = None
                self._step_at = math.inf
            interval = self.interval
            logger.info(
                "relay %s: no rate refusal for %gs; rate back to %s",
                self.name or "?",
                self.cooldown,
                "no limit" if interval is None else _per_second(interval),
                extra={"relay": self.name},
            )

    def _observed_interval(self, now: float) -> float:
        """Return the mean interval between the starts of the last window.

        Over at least ``OBSERVED_SPAN``, so that a few starts at once do not
        read as a huge rate; a relay with no recent start is read as 1/s.
        """
        since = now - OBSERVED_WINDOW
        recent = [started for started in self._recent if started > since]
        if not recent:
            return OBSERVED_WINDOW
        return max(now - recent[0], OBSERVED_SPAN) / len(recent)


def _per_second(interval: float) -> str:
    return f"{1 / interval:.3g}/s"
