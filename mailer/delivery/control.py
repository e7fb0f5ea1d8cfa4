"""Control one batch of sends: its stop and reason, the first-attempt gate, the grace.

``MessageClient.stream`` (and ``send_many``) runs each message of a batch
through ``BatchControl.run`` inside ``stream_batch`` (``mailer.delivery.bounded``).
The control
adds what a batch needs beyond running sends side by side:

* a bound on the transactions handed to the transport at once (``in_flight``):
  a message waiting for its retry holds none, so it never holds up the others;
  ``stream_batch`` runs ``WAITING_ROOM`` more sends than that, room for those
  waits, and memory stays bounded whatever the size of the batch;
* a stop, with the reason it stopped: set by a signal, or by an attempt that
  failed in a way every message would (a refused login). Sends not finished
  end ``pending``, and so does every message pulled after it: none is dropped;
* the first-attempt gate: until one attempt ends without a fatal error,
  attempts run one at a time, so a refused login costs one login, not one per
  connection (a burst of bad logins can lock the account). While the gate is
  shut, any failure every message would hit (``replies.misconfiguration``: a
  refused connection, no greeting, 530 STARTTLS required...) is fatal too: the
  batch stops after that one attempt instead of trying every message;
* the shutdown grace: after a stop, attempts in flight get ``grace`` seconds,
  then they are cut off and reported ``pending`` (ambiguous if the message may
  have been delivered).

The control is handed to each send explicitly (``MessageClient._send_one``);
a send on its own gets ``SendControl()``, which asks nothing of it. So
``send(message)`` keeps its plain signature (the seam tests replace) and no
state passes between client and batch behind their backs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.state import (
    AttemptObserver,
    MessageAttempts,
    PreparedMessage,
    to_addresses,
)
from mailer.replies import Misconfiguration, Verdict, classify_error, misconfiguration

# Sends a batch runs beyond its transactions in flight: room for the messages
# waiting for a retry. Each holds its serialised bytes in memory.
WAITING_ROOM = 100


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A message for ``send_many``, with what its send should keep to.

    Attributes:
        message: The message, or the same prepared earlier (its bytes final).
        message_id: Reuse this Message-ID (a resend of a message that may have
            been delivered already).
        recipients: Send only to these envelope recipients.
        observer: Told before and after each attempt (the journal).
        date: Reuse this Date (a resend: the same bytes, the same signature).
    """

    message: Message | PreparedMessage
    message_id: str | None = None
    recipients: tuple[str, ...] | None = None
    observer: AttemptObserver | None = None
    date: str | None = None

    @property
    def is_plain(self) -> bool:
        """Return whether this is just a message, with no option."""
        return (
            self.message_id is None
            and self.recipients is None
            and self.observer is None
            and self.date is None
        )


class StopEvent(asyncio.Event):
    """A stop for ``stream``/``send_many``/``send_messages`` that says why.

    Any ``asyncio.Event`` stops a batch (the pending messages then say
    "interrupted"); this one carries the reason the pending messages report.
    """

    reason = "interrupted"

    def set_reason(self, reason: str) -> None:
        """Set the event with ``reason`` (the first reason given is kept)."""
        if not self.is_set():
            self.reason = reason
            self.set()


def as_request(item: Message | PreparedMessage | SendRequest) -> SendRequest:
    """Return ``item`` as a SendRequest (a plain message has no option)."""
    return item if isinstance(item, SendRequest) else SendRequest(item)


def not_started(request: SendRequest, reason: str) -> SendResult:
    """Return the ``pending`` result of a message the batch never attempted."""
    return SendResult.of(
        SendStatus.PENDING,
        to=to_addresses(request.message),
        message_id=request.message_id,
        recipients={},
        refused={},
        error=f"not sent: {reason}",
        transient=True,
    )


class SendControl:
    """What one send asks of the batch it runs in; on its own, nothing.

    ``MessageClient.send`` runs with this null control: every attempt is
    admitted at once, holds no slot, waits for its retry with a plain sleep,
    and nothing ever stops it. ``BatchControl`` overrides each method.
    """

    abandoning = False  # True once a stopped batch's grace is over
    reason = ""  # why the batch stopped

    @property
    def is_halted(self) -> bool:
        """Return whether the batch stopped taking new attempts."""
        return False

    def slot(self) -> AbstractAsyncContextManager[object]:
        """Return the context an attempt holds while it runs (a transaction slot)."""
        return contextlib.nullcontext()

    async def admit(self, attempts: MessageAttempts) -> bool:
        """Wait for the right to start an attempt; return False if the batch stopped."""
        return True

    def attempt_done(self, attempts: MessageAttempts) -> None:
        """Say that an attempt admitted by ``admit`` has ended."""

    async def sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; return False if the batch stopped meanwhile."""
        await asyncio.sleep(delay)
        return True

    def stop(self, reason: str) -> None:
        """Stop taking new attempts (a batch keeps the first reason given)."""

    def judge(self, error: BaseException) -> Verdict:
        """Return what a failed attempt means here; on its own, ``classify_error``."""
        return classify_error(error)


class BatchControl(SendControl):
    """What the sends of one batch share: slots, the stop, the gate, the grace.

    Args:
        in_flight: Transactions handed to the transport at once.
        grace: Seconds attempts in flight get after a stop signal, before they
            are cut off.
    """

    def __init__(self, *, in_flight: int, grace: float) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self.in_flight = in_flight
        self.slots = asyncio.Semaphore(in_flight)
        # New sends prepare their bytes as they start: at most in_flight of
        # them may be started and not yet waiting to retry, so that the waiting
        # room holds retries, not a hundred serialised messages (with a 1 MB
        # attachment, 100 x 1.4 MB) queued for a slot.
        self.fresh = asyncio.Semaphore(in_flight)
        self._fresh_holders: set[asyncio.Task[object]] = set()
        self.grace = grace
        self.halted = asyncio.Event()
        self.reason = ""
        self.abandoning = False
        self._gate = asyncio.Lock()
        self._at_gate = 0  # sends waiting for the gate
        self._proven = False
        self._holder: MessageAttempts | None = None
        self._sends: set[asyncio.Task[object]] = set()

    @property
    def max_running(self) -> int:
        """Return how many sends may run at once: in flight, or waiting to retry."""
        return self.in_flight + WAITING_ROOM

    @property
    def is_halted(self) -> bool:
        """Return whether the batch stopped taking new attempts."""
        return self.halted.is_set()

    def slot(self) -> AbstractAsyncContextManager[object]:
        """Return the batch's transaction slots: an attempt holds one while it runs."""
        return self.slots

    def stop(self, reason: str) -> None:
        """Stop taking new attempts (the first reason given is kept)."""
        if not self.halted.is_set():
            self.reason = reason
            self.halted.set()

    async def run(
        self,
        send: Callable[[SendRequest, SendControl], Awaitable[SendResult]],
        item: Message | PreparedMessage | SendRequest,
    ) -> SendResult:
        """Send one message of the batch; once the batch stopped, report it pending.

        Args:
            send: Sends a request under this control and returns its result
                (a failure is a failed result, not an exception).
            item: The message, or a request.
        """
        request = as_request(item)
        if self.halted.is_set():
            return not_started(request, self.reason)
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always called from a task
        self._sends.add(task)
        try:
            await self.fresh.acquire()
            self._fresh_holders.add(task)
            return await send(request, self)
        except asyncio.CancelledError:
            if not self.abandoning:
                raise
            # Cut off by the end of the grace before send() could say more.
            return not_started(request, "abandoned at shutdown")
        finally:
            self._release_fresh(task)
            self._sends.discard(task)

    def _release_fresh(self, task: asyncio.Task[object] | None) -> None:
        if task in self._fresh_holders:
            self._fresh_holders.discard(task)
            self.fresh.release()

    @contextlib.asynccontextmanager
    async def watching(self, stop: asyncio.Event | None) -> AsyncIterator[None]:
        """Stop the batch when ``stop`` is set, for the duration of the block."""
        if stop is None:
            yield
            return
        watcher = asyncio.create_task(self._watch(stop))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stop(getattr(stop, "reason", "interrupted"))
        if self._sends:
            await asyncio.wait(set(self._sends), timeout=self.grace)
        self.abandoning = True
        for task in list(self._sends):
            task.cancel()

    async def admit(self, attempts: MessageAttempts) -> bool:
        """Wait for the right to start an attempt; return False if the batch stopped."""
        if self.halted.is_set():
            return False
        # Behind the gate, attempts start in the order they arrived: a send that
        # comes when the gate has just opened queues behind those still
        # passing through it, rather than overtaking them.
        if not self._proven or self._at_gate:
            self._at_gate += 1
            try:
                await self._gate.acquire()
            finally:
                self._at_gate -= 1
            if self.is_proven:  # another attempt opened the gate while we waited
                self._gate.release()
            else:
                self._holder = attempts
            if self.halted.is_set():
                self.attempt_done(attempts)
                return False
        return True

    def judge(self, error: BaseException) -> Verdict:
        """Return what a failed attempt means for the batch.

        Until an attempt has gone through, a failure that every message would
        hit (``misconfiguration``) is fatal: the batch stops after it, and the
        messages not sent end ``pending``, instead of each being tried
        ``MAILER_MAX_ATTEMPTS`` times. Nothing was sent yet, so running the
        batch again once the setting is fixed loses and doubles nothing.
        """
        if not self._proven and misconfiguration(error) is not None:
            return Verdict.FATAL
        return classify_error(error)

    @property
    def is_proven(self) -> bool:
        """Return whether an attempt has ended without a fatal error yet."""
        return self._proven

    def attempt_done(self, attempts: MessageAttempts) -> None:
        """Release the gate if this attempt held it; open it for good if not fatal."""
        if self._holder is attempts:
            self._holder = None
            if attempts.attempts and attempts.verdict is not Verdict.FATAL:
                self._proven = True
            self._gate.release()

    async def sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; return False if the batch stopped meanwhile."""
        # A send waiting to retry makes room for a new one (see ``fresh``).
        self._release_fresh(asyncio.current_task())
        try:
            await asyncio.wait_for(self.halted.wait(), delay)
        except TimeoutError:
            return True
        return False


def fatal_reason(error: BaseException, settings: MailerSettings) -> str:
    """Return why a batch stopped after ``error``, with the setting to check.

    Args:
        error: The failure every message would hit.
        settings: The settings in use (the hint names ``MAILER_DSN`` when it
            gave the relays).
    """
    kind = misconfiguration(error)
    hint = _HINTS_DSN if settings.dsn is not None else _HINTS
    check = f"; {hint[kind]}" if kind is not None else ""
    return f"stopped: every message would fail the same way: {error}{check}"


_HINTS = {
    Misconfiguration.UNREACHABLE: "check MAILER_SMTP_HOST and MAILER_SMTP_PORT "
    "(is the server running?)",
    Misconfiguration.NOT_SMTP: "check MAILER_SMTP_PORT and MAILER_SMTP_TLS "
    "(port 465 is usually MAILER_SMTP_TLS=tls, 587 starttls; a local inbox none)",
    Misconfiguration.CLIENT_REFUSED: "the server refuses this client; check "
    "MAILER_SMTP_HOST (is it your relay?)",
    Misconfiguration.STARTTLS_REQUIRED: "set MAILER_SMTP_TLS=starttls",
    Misconfiguration.LOGIN_REQUIRED: "set MAILER_SMTP_USERNAME and "
    "MAILER_SMTP_PASSWORD",
    Misconfiguration.LOGIN_REFUSED: "check MAILER_SMTP_USERNAME and "
    "MAILER_SMTP_PASSWORD",
    Misconfiguration.NO_LOGIN: "the server offers no login: leave "
    "MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD empty (a local inbox needs "
    "none), or set MAILER_SMTP_TLS=starttls if it offers login only over TLS",
    Misconfiguration.NO_STARTTLS: "the server offers no STARTTLS: for a local "
    "server without TLS (such as mailer inbox) set MAILER_SMTP_TLS=none; on "
    "port 465 use MAILER_SMTP_TLS=tls",
    Misconfiguration.TLS: "check MAILER_SMTP_TLS (and MAILER_SMTP_CA_FILE for a "
    "private CA)",
}
_HINTS_DSN = {
    Misconfiguration.UNREACHABLE: "check the host and port in MAILER_DSN "
    "(is the server running?)",
    Misconfiguration.NOT_SMTP: "check the port and the scheme in MAILER_DSN "
    "(port 465 is usually smtps://, 587 smtp:// with tls=starttls)",
    Misconfiguration.CLIENT_REFUSED: "the server refuses this client; check the "
    "host in MAILER_DSN (is it your relay?)",
    Misconfiguration.STARTTLS_REQUIRED: "add ?tls=starttls to the relay in MAILER_DSN",
    Misconfiguration.LOGIN_REQUIRED: "add user:password@ to the relay in MAILER_DSN",
    Misconfiguration.LOGIN_REFUSED: "check the user name and password in MAILER_DSN",
    Misconfiguration.NO_LOGIN: "the server offers no login: remove user:password@ "
    "from the relay in MAILER_DSN, or add ?tls=starttls if it offers login only "
    "over TLS",
    Misconfiguration.NO_STARTTLS: "the server offers no STARTTLS: for a local "
    "server without TLS add ?tls=none to the relay in MAILER_DSN; on port 465 "
    "use smtps://",
    Misconfiguration.TLS: "check the scheme and tls= in MAILER_DSN (and ca_file= "
    "for a private CA)",
}
