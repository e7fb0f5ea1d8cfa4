"""Share each relay's rate limit among the queue's workers, through PostgreSQL.

``mailer worker`` gives its SMTP transports a ``SharedRateLimiter`` per relay
instead of the in-process ``LocalRateLimiter``: the same ``RateLimiter``
protocol, so the transport and its lanes do not know the difference. The
state lives in one row per relay (``mailer.queue.ratesql``), so
``MAILER_RATE_LIMIT`` (or a relay's ``?rate=``) holds for all the workers
together, on any number of hosts:

* ``wait_ready`` reserves the relay's next start slot in one round trip
  (``mailer_rate_reserve``: GCRA under the row's lock, on the database's
  clock), converts it to this process's monotonic clock and sleeps until it.
  Slots are at least the limit's interval (plus ``MARGIN``) apart, but for
  the burst, whichever worker holds them: any ``count + burst + 1`` of them
  span at least ``period x (1 + MARGIN)``.
* ``try_acquire`` (no round trip: it is called right before MAIL FROM) takes
  a reserved slot that is due, up to ``LATENESS`` of the period late. The
  bound then holds at the server while the delays between a slot and the
  server's reading of MAIL FROM vary by less than ``MARGIN`` of the period
  (15 ms for per-second limits); lateness may take a third of that.
* A slot its worker reaches later than that (the process did not run in
  time) is not used as it is: the next ``wait_ready`` moves it to the
  database's now (less the lateness allowed but for the answer's way back,
  which it keeps) and delays
  every reservation made after the move by as much (``mailer_rate_move``).
  The move is allowed only while fewer than ``count + burst`` reservations
  were made after that slot: then any ``count + burst + 1`` starts include
  two, the first and the last reserved, whose reservations are ``count +
  burst`` apart and which the move did not bring closer, so the starts
  still span the period. It is also made only when the slot is late by less
  than one interval (a move delays every later start by its lateness; a
  lost slot costs one interval). Otherwise a new slot is reserved at the end
  and the late one is lost (counted as missed): a late worker costs
  throughput, never an extra start.
* ``record_refusal`` slows the relay for every worker
  (``mailer_rate_refusal``): the next reservation of any worker sees the
  halved rate. Reservations made before at the old rate (at most one per
  connection) may still go elsewhere; this worker drops its own at once.

A relay with no limit makes no round trip until it is slowed down; each
worker looks up its relays' slow-down every ``REFRESH`` seconds, and the rate
a refusal halves is the refusing worker's own rate times the workers alive
(they share the relay).

Clocks: a slot is a time on the database's clock. Each reservation samples
the offset between that clock and this process's monotonic one; the sample
with the shortest round trip (aged by ``DRIFT``) is used, so its error is
under half that round trip (a fraction of a millisecond on a LAN).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from mailer.config.rates import RateLimit
from mailer.config.settings import MailerSettings
from mailer.exceptions import DeliveryError, QueueError
from mailer.queue.database import database_errors
from mailer.queue.ratesql import MOVE_SQL, REFUSAL_SQL, RESERVE_SQL, STATES_SQL
from mailer.replies import Reply
from mailer.transports.ratelimit import (
    MARGIN,
    MAX_SLOWDOWN,
    OBSERVED_SPAN,
    OBSERVED_WINDOW,
)

if TYPE_CHECKING:
    from mailer.queue.database import Connection

logger = logging.getLogger("mailer.ratelimit")

# A reserved slot is taken up to this fraction of the period late (a third of
# the margin: the rest is for the network and the server's own delays).
LATENESS = MARGIN / 3
# Seconds between look-ups of the slow-down of relays that have no limit.
REFRESH = 1.0
# A moved slot is placed so that it is this fraction of the lateness allowed
# late when the answer arrives (less, the longer the answer takes).
MOVED_LATENESS = 0.75
# A reserved slot is at least this many typical round trips ahead (at most
# the lateness allowed).
LEAD_ROUND_TRIPS = 1.5
# How fast this process's clock may drift from the database's (seconds per
# second): an offset sample ages by this much, so a fresh one replaces it.
DRIFT = 5e-5
_RECENT_STARTS = 4096


@dataclass(frozen=True, slots=True)
class RelayState:
    """A relay's slow-down as the shared storage holds it.

    Attributes:
        generation: Changes at each slow-down.
        halvings: How many times its rate is halved now.
        spacing: Seconds between starts now; None when nothing paces it.
        slowed: The call that returned it slowed the relay down.
    """

    generation: int
    halvings: int
    spacing: float | None
    slowed: bool = False


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """A reserved start slot.

    Attributes:
        local: When it starts, on this process's monotonic clock.
        remote: The same, on the database's clock (seconds since the epoch).
        seq: Its number among the relay's reservations.
        generation: The relay's generation when it was reserved.
    """

    local: float
    remote: float
    seq: int
    generation: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a reservation (or a move) brought back.

    Attributes:
        slot: The slot; None when nothing paces the relay (no limit, not
            slowed down).
        state: The relay's slow-down.
        rate_before: The limit the relay's previous reservation was made with.
        moved: A late slot was moved to now (rather than a new one reserved).
    """

    slot: Slot | None
    state: RelayState
    rate_before: str | None = None
    moved: bool = False


class RateStore(Protocol):
    """Where the shared rate limits live (PostgreSQL; a fake in unit tests)."""

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
        """Reserve the relay's next ``count`` start slots, or move ``late`` to now.

        One round trip; the reservations come in the order of their slots (a
        single one when nothing paces the relay, or for a move).

        Args:
            relay: The relay's key.
            interval: Seconds between starts at the limit; None for no limit.
            burst: Starts allowed at once after an idle spell.
            cooldown: Seconds a slow-down lasts per step.
            rate: The limit, as written, to tell workers that disagree.
            count: How many slots.
            lead: Seconds a slot is at least ahead of the database's now.
            late: A slot reached too late, to move to now if allowed.
            window: ``count + burst``: a late slot may move while fewer
                reservations than this came after it (None: always).
            credit: Seconds of lateness a moved slot may keep (it is placed
                up to this much before now, less the time the answer takes to
                arrive, and later slots move that much less).
        """
        ...

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
        """Record a rate refusal of a transaction handed over at ``generation``."""
        ...

    async def state(self, relay: str, /, *, cooldown: float) -> RelayState | None:
        """Return the relay's slow-down (its spacing for a relay with no limit)."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds (a connection)."""
        ...


class ClockOffset:
    """Map the database's clock to this process's monotonic clock.

    Args:
        drift: How much a sample's error grows per second of age.
    """

    def __init__(self, drift: float = DRIFT) -> None:
        self.drift = drift
        self.offset: float | None = None
        self.error = math.inf
        self._at = 0.0

    def sample(self, sent: float, received: float, remote: float) -> None:
        """Keep the sample (local send and receive times, remote time) if better."""
        error = (received - sent) / 2
        if error <= self.error + self.drift * (received - self._at):
            self.offset = remote - (sent + received) / 2
            self.error = error
            self._at = received

    def local(self, remote: float) -> float:
        """Return ``remote`` (seconds on the database's clock) on the local clock."""
        assert self.offset is not None  # noqa: S101 - sampled first
        return remote - self.offset


class PostgresRateStore:
    """The shared rate limits in the queue database, on a connection of their own.

    Args:
        dsn: ``MAILER_QUEUE_DSN`` (a secret: never printed).
        stale_after: Seconds without a heartbeat after which a worker is not
            counted as alive.
        clock: Monotonic clock.
    """

    def __init__(
        self,
        dsn: str,
        *,
        stale_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dsn = dsn
        self.stale_after = stale_after
        self._clock = clock
        self.clock = ClockOffset()
        self._connection: Connection | None = None
        self._connecting = asyncio.Lock()
        self.round_trips = 0
        self.round_trip_seconds = 0.0
        self.slowest_round_trip = 0.0
        self.typical_round_trip = 0.001  # moving average, seconds

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
        """Reserve the relay's next ``count`` start slots, or move ``late`` to now."""
        connection = await self._connect()  # before timing the round trip
        # A slot ahead of now by the time an answer takes to arrive, at most
        # ``lead``: then it is not already past when it does.
        lead = min(lead, LEAD_ROUND_TRIPS * self.typical_round_trip)
        # A moved slot keeps what lateness its answer's way back leaves.
        credit = max(0.0, credit - lead)
        if late is None:
            sql = RESERVE_SQL
            params = [relay, interval, burst, cooldown, rate, count, lead]
        else:
            sql = MOVE_SQL
            params = [relay, late.remote, late.seq, late.generation, window, credit]
            params += [interval, burst, cooldown, rate, lead]
        sent = self._clock()
        rows = await self._execute(connection, sql, params)
        received = self._clock()
        self.round_trips += 1
        self.round_trip_seconds += received - sent
        self.slowest_round_trip = max(self.slowest_round_trip, received - sent)
        self.typical_round_trip += 0.1 * (received - sent - self.typical_round_trip)
        self.clock.sample(sent, received, rows[0][1])
        reservations = []
        for slot_at, _, generation, halvings, spacing, before, seq, *moved in rows:
            state = RelayState(int(generation), int(halvings), spacing)
            slot = None
            if spacing is not None:
                local = self.clock.local(slot_at)
                slot = Slot(local, slot_at, int(seq), int(generation))
            reservations.append(
                Reservation(slot, state, before, bool(moved and moved[0]))
            )
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
        """Record a rate refusal of a transaction handed over at ``generation``."""
        connection = await self._connect()
        params = [relay, interval, generation, cooldown, observed, MAX_SLOWDOWN]
        rows = await self._execute(connection, REFUSAL_SQL, [*params, self.stale_after])
        generation, halvings, spacing, slowed, _workers = rows[0]
        return RelayState(int(generation), int(halvings), spacing, bool(slowed))

    async def state(self, relay: str, /, *, cooldown: float) -> RelayState | None:
        """Return the relay's slow-down, recovered to now (None: never recorded)."""
        connection = await self._connect()
        rows = await self._execute(connection, STATES_SQL, [cooldown, [relay]])
        if not rows:
            return None
        _relay, generation, halvings, measured = rows[0]
        spacing = None if measured is None else measured * 2 ** int(halvings)
        return RelayState(int(generation), int(halvings), spacing)

    async def aclose(self) -> None:
        """Close the connection."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def _execute(
        self, connection: Connection, sql: str, params: Sequence[object]
    ) -> list[tuple[Any, ...]]:
        try:
            with database_errors("the shared rate limit", self._dsn):
                cursor = await connection.execute(sql.encode(), params)
                return await cursor.fetchall()
        except QueueError:
            if connection.broken or connection.closed:
                self._connection = None  # the next call connects again
            raise
        except asyncio.CancelledError:
            # Cut off mid-statement (a timeout): the session's state is
            # unknown, so the next call starts a new one.
            self._connection = None
            await asyncio.shield(connection.close())
            raise

    async def _connect(self) -> Connection:
        import psycopg

        async with self._connecting:
            if self._connection is None or self._connection.closed:
                with database_errors("the shared rate limit", self._dsn):
                    self._connection = await psycopg.AsyncConnection.connect(
                        self._dsn, autocommit=True
                    )
            return self._connection


class SharedRateLimiter:
    """A relay's rate limit shared by the queue's workers (a ``RateLimiter``).

    Args:
        rate: The limit; ``None`` for none (it still slows down on refusals,
            for every worker).
        store: Where the shared state lives.
        name: The relay (``host:port``): its row, and log messages.
        cooldown: Seconds without a refusal before a slowed rate doubles back.
        timeout: Seconds the shared state has to answer (``MAILER_TIMEOUT``).
        clock: Monotonic clock (replaced in tests).
        sleep: ``asyncio.sleep`` (replaced in tests).
    """

    def __init__(
        self,
        rate: RateLimit | None,
        *,
        store: RateStore,
        name: str,
        cooldown: float = 60.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.name = name
        self.cooldown = cooldown
        self.timeout = timeout
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._interval = None if rate is None else rate.interval * (1 + MARGIN)
        self._burst = 0 if rate is None else rate.burst
        self._window = None if rate is None else rate.count + rate.burst
        self._rate_text = "" if rate is None else str(rate)
        self._generation = 0
        self._halvings = 0
        self._spacing = self._interval
        self._slots: list[Slot] = []  # reserved, not yet taken, by time
        self._waiters: list[asyncio.Future[Slot | None]] = []
        self._reserver: asyncio.Task[None] | None = None
        self._recent: deque[float] = deque(maxlen=_RECENT_STARTS)
        self._told_mismatch = False
        self.taken = 0  # turns taken
        self.moved = 0  # late slots moved to now
        self.missed = 0  # reserved slots given up: too late to move, or slowed down

    @property
    def generation(self) -> int:
        """Return a number that changes at each slow-down."""
        return self._generation

    @property
    def spacing(self) -> float | None:
        """Return the seconds between the relay's starts, as last heard; None: free."""
        return self._spacing

    @property
    def is_paced(self) -> bool:
        """Return whether starts wait for reserved slots (a limit, or slowed)."""
        return self._spacing is not None

    @property
    def lateness(self) -> float:
        """Return how late (seconds) a reserved slot may still be taken as it is."""
        if self.rate is not None:
            return self.rate.period * LATENESS
        # No limit to keep exactly: only the slow-down's pace.
        return self._spacing or 0.0

    async def wait_ready(self) -> float:
        """Reserve a start slot (or move a late one) and sleep until it.

        The lanes waiting at once share one round trip: their slots are
        reserved together.

        Returns:
            The seconds waited.

        Raises:
            DeliveryError: The shared state cannot be reached (transient: the
                message is tried again later).
        """
        started = self._clock()
        if not self.is_paced or self._on_time(started) is not None:
            return 0.0
        late = self._late(started)
        try:
            if late is not None:
                self._slots.remove(late)
                slot = self._take_in(await self._call(late=late), late=late)[0]
            else:
                slot = await self._reserve_with_others()
        except QueueError as exc:
            raise DeliveryError(
                f"{self.name}: the rate limit the queue's workers share cannot be "
                f"read ({exc}); the message is tried again later",
                transient=True,
            ) from None
        if slot is not None:
            # Until the slot itself, so that try_acquire finds it due.
            while (delay := slot.local - self._clock()) > 0:
                await self._sleep(delay)
        return self._clock() - started

    async def aclose(self) -> None:
        """Stop reserving (the worker is stopping)."""
        task, self._reserver = self._reserver, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _call(
        self, *, count: int = 1, late: Slot | None = None
    ) -> list[Reservation]:
        try:
            # A database that does not answer must not hold the message
            # forever: the attempt fails transient and is retried later.
            async with asyncio.timeout(self.timeout):
                return await self._store.reserve(
                    self.name,
                    interval=self._interval,
                    burst=self._burst,
                    cooldown=self.cooldown,
                    rate=self._rate_text,
                    count=count,
                    lead=self.lateness,
                    late=late,
                    window=self._window,
                    credit=MOVED_LATENESS * self.lateness,
                )
        except TimeoutError:
            raise QueueError(
                f"the queue database did not answer within {self.timeout:g}s"
            ) from None

    async def _reserve_with_others(self) -> Slot | None:
        """Join the next reservation round trip; return this caller's slot."""
        future: asyncio.Future[Slot | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if self._reserver is None or self._reserver.done():
            # A task of its own: a lane cancelled meanwhile stops no one else.
            self._reserver = asyncio.create_task(self._reserve_for_waiters())
        return await future

    async def _reserve_for_waiters(self) -> None:
        while self._waiters:
            batch, self._waiters = self._waiters, []
            try:
                slots = self._take_in(await self._call(count=len(batch)))
            except QueueError as exc:
                for future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                for future in batch:
                    future.cancel()
                raise
            for index, future in enumerate(batch):
                if not future.done():
                    # One row without a slot: nothing paces the relay now.
                    future.set_result(slots[min(index, len(slots) - 1)])

    def _take_in(
        self, reservations: list[Reservation], *, late: Slot | None = None
    ) -> list[Slot | None]:
        """Learn from reservations; keep their slots; return them in order."""
        slots = []
        for reservation in reservations:
            if reservation.moved:
                self.moved += 1
            elif late is not None:
                self.missed += 1
            self._learn(reservation.state)
            self._check_rate(reservation.rate_before)
            if reservation.slot is not None:
                bisect.insort(self._slots, reservation.slot)
            slots.append(reservation.slot)
        return slots

    def try_acquire(self) -> bool:
        """Take a reserved slot that is due now, if there is one; never waits."""
        now = self._clock()
        if not self.is_paced:
            self._recent.append(now)  # to slow a relay with no limit from its rate
            self.taken += 1
            return True
        slot = self._on_time(now)
        if slot is None:
            return False
        self._slots.remove(slot)
        if self.rate is None:
            self._recent.append(now)
        self.taken += 1
        return True

    async def record_refusal(self, reply: Reply, /, *, generation: int) -> None:
        """Slow the relay down for every worker, unless done for this rate already.

        Args:
            reply: The refusal, for the log.
            generation: ``generation`` when the refused transaction was handed
                over; a refusal of one handed over before the last slow-down
                only restarts the cool-down.
        """
        observed = (
            self._observed_interval(self._clock()) if self._interval is None else None
        )
        try:
            async with asyncio.timeout(self.timeout):
                state = await self._store.refuse(
                    self.name,
                    interval=self._interval,
                    generation=generation,
                    cooldown=self.cooldown,
                    observed=observed,
                )
        except (QueueError, TimeoutError) as exc:
            logger.warning(
                "relay %s refused a transaction for its rate (%s), but the rate the "
                "queue's workers share could not be lowered: %s",
                self.name,
                reply,
                f"no answer within {self.timeout:g}s"
                if isinstance(exc, TimeoutError)
                else exc,
                extra={"relay": self.name, "reply_code": reply.code},
            )
            return
        if state.slowed and state.spacing is not None:
            logger.warning(
                "relay %s refused a transaction for its rate (%s): slowing it to "
                "%.3g/s for every worker of the queue, for %gs",
                self.name,
                reply,
                1 / state.spacing,
                self.cooldown,
                extra={"relay": self.name, "reply_code": reply.code},
            )
        self._learn(state, told=state.slowed)

    async def refresh(self) -> None:
        """Look up the relay's slow-down (a relay with no limit reserves no slot).

        Raises:
            QueueError: The shared state cannot be reached.
        """
        try:
            async with asyncio.timeout(self.timeout):
                state = await self._store.state(self.name, cooldown=self.cooldown)
        except TimeoutError:
            raise QueueError(
                f"the queue database did not answer within {self.timeout:g}s"
            ) from None
        if state is not None:
            self._learn(state)

    def _on_time(self, now: float) -> Slot | None:
        """Return the first slot that is due and not too late, if any."""
        lateness = self.lateness
        for slot in self._slots:
            if slot.local > now:
                return None
            if now - slot.local <= lateness:
                return slot
        return None

    def _late(self, now: float) -> Slot | None:
        """Return the first slot reached too late (to be moved), if any."""
        lateness = self.lateness
        for slot in self._slots:
            if now - slot.local > lateness:
                return slot
        return None

    def _learn(self, state: RelayState, *, told: bool = False) -> None:
        """Take in the shared slow-down; drop slots reserved before a new one."""
        if state.generation != self._generation:
            self._generation = state.generation
            kept = [s for s in self._slots if s.generation == state.generation]
            self.missed += len(self._slots) - len(kept)
            self._slots = kept
            if state.halvings > self._halvings and not told and state.spacing:
                logger.info(
                    "relay %s: slowed to %.3g/s by another worker's rate refusal",
                    self.name,
                    1 / state.spacing,
                    extra={"relay": self.name},
                )
        if state.halvings < self._halvings:
            logger.info(
                "relay %s: no rate refusal for %gs; rate back to %s",
                self.name,
                self.cooldown,
                "no limit" if state.spacing is None else f"{1 / state.spacing:.3g}/s",
                extra={"relay": self.name},
            )
        self._halvings = state.halvings
        self._spacing = state.spacing if state.spacing is not None else self._interval

    def _check_rate(self, before: str | None) -> None:
        if before and before != self._rate_text and not self._told_mismatch:
            self._told_mismatch = True
            logger.warning(
                "relay %s: another worker limits it to %s, this one to %s; the "
                "queue's workers should share one MAILER_RATE_LIMIT",
                self.name,
                before,
                self._rate_text or "no limit",
                extra={"relay": self.name},
            )

    def _observed_interval(self, now: float) -> float:
        """Return the mean interval between this worker's starts of the last window."""
        since = now - OBSERVED_WINDOW
        recent = [started for started in self._recent if started > since]
        if not recent:
            return OBSERVED_WINDOW
        return max(now - recent[0], OBSERVED_SPAN) / len(recent)


class SharedRateLimits:
    """A worker's shared limiters, one per relay, and their refresh.

    Use ``limiter`` as the ``LimiterFactory`` of the worker's transports, and
    the object as an async context manager around the worker's life.

    Args:
        store: Where the shared state lives.
        refresh: Seconds between look-ups of unlimited relays' slow-down.
        clock: Monotonic clock.
    """

    def __init__(
        self,
        store: RateStore,
        *,
        refresh: float = REFRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.limiters: dict[str, SharedRateLimiter] = {}
        self._refresh = refresh
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def limiter(self, settings: MailerSettings) -> SharedRateLimiter:
        """Return the shared limiter of the relay ``settings`` describe."""
        name = f"{settings.smtp_host}:{settings.port}"
        limiter = self.limiters.get(name)
        if limiter is None:
            limiter = SharedRateLimiter(
                settings.rate,
                store=self.store,
                name=name,
                cooldown=settings.rate_cooldown,
                timeout=settings.timeout,
                clock=self._clock,
            )
            self.limiters[name] = limiter
        return limiter

    async def __aenter__(self) -> SharedRateLimits:
        """Start looking up the slow-down of relays with no limit."""
        self._task = asyncio.create_task(self._refreshing(), name="shared rate limits")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the look-ups and the limiters, and close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for limiter in self.limiters.values():
            await limiter.aclose()
        await self.store.aclose()

    def summary(self) -> str:
        """Return one line: turns taken, moved and missed per relay; round trips."""
        parts = [
            f"{name}: {limiter.taken} started, {limiter.moved} late turns moved, "
            f"{limiter.missed} missed"
            for name, limiter in sorted(self.limiters.items())
        ]
        store = self.store
        if isinstance(store, PostgresRateStore) and store.round_trips:
            mean = store.round_trip_seconds / store.round_trips
            slowest = store.slowest_round_trip * 1000
            parts.append(
                f"{store.round_trips} database round trips, mean "
                f"{mean * 1000:.2f} ms, slowest {slowest:.1f} ms"
            )
        return "shared rate limits: " + ("; ".join(parts) or "no relay used")

    async def _refreshing(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            for limiter in list(self.limiters.values()):
                if limiter.rate is not None:
                    continue  # each reservation brings its state
                try:
                    await limiter.refresh()
                except QueueError as exc:
                    logger.debug("relay %s: refresh failed: %s", limiter.name, exc)
