"""Send Messages: MessageClient (one or many, concurrently) and its factory."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from functools import partial

from mailer.config.secrets import Redactor
from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.delivery.bounded import stream_batch
from mailer.delivery.control import (
    BatchControl,
    SendControl,
    SendRequest,
    as_request,
    fatal_reason,
)
from mailer.delivery.hooks import Hooks
from mailer.delivery.prepare import Preparer
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.retry import RetryPolicy
from mailer.delivery.state import (
    AttemptObserver,
    MessageAttempts,
    OutgoingMessage,
    PreparedMessage,
    observes_content,
    to_addresses,
)
from mailer.delivery.telemetry import (
    MessageTrace,
    Telemetry,
    log_outcome,
    telemetry_from_settings,
)
from mailer.exceptions import (
    ConfigError,
    DeliveryError,
    MailerError,
    RefusedByHookError,
    describe_error,
)
from mailer.replies import Reply, Verdict, classify_reply
from mailer.transports.base import (
    AsyncCloseable,
    Delivery,
    DeliveryProgress,
    Transport,
    reports_progress,
)
from mailer.transports.factory import transport_from_settings
from mailer.transports.ratelimit import LimiterFactory

logger = logging.getLogger("mailer")

# Transactions a batch hands to the transport per connection: one being sent,
# one whose envelope is chained behind it (PIPELINING), and one ready.
BATCH_DEPTH = 3

Sendable = Message | PreparedMessage | SendRequest


class MessageClient(AsyncCloseable):
    """Send messages through a transport (SMTP by default), sharing its connections.

    Use it as an async context manager so that its connections are closed::

        async with MessageClient(settings) as client:
            result = await client.send(message)

    Hooks run around each send (``client.hooks.before_send(fn)``, see
    ``mailer.delivery.hooks``), and each final result is logged as one
    structured record (``mailer.delivery.telemetry``).

    Args:
        settings: Where and how to send; default ``MailerSettings()``.
        transport: What delivers the bytes; default an SMTPTransport built from
            ``settings``. Pass a MemoryTransport or MockTransport in tests.
        hooks: Hooks to register after those the settings name
            (``MAILER_BEFORE_SEND``, ``MAILER_AFTER_SEND``, ``MAILER_REDIRECT_TO``).
        telemetry: Traces and counts messages; default OpenTelemetry when
            ``MAILER_OTEL`` asks for it and it is installed, else nothing.

    Raises:
        ConfigError: A hook named in the settings cannot be imported, or
            ``MAILER_OTEL=on`` without the ``[otel]`` extra.
    """

    def __init__(
        self,
        settings: MailerSettings | None = None,
        /,
        *,
        transport: Transport | None = None,
        hooks: Hooks | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings if settings is not None else MailerSettings()
        self.hooks = Hooks.from_settings(self.settings)
        if hooks is not None:
            self.hooks.extend(hooks)
        self.telemetry = (
            telemetry
            if telemetry is not None
            else telemetry_from_settings(self.settings)
        )
        self.transport: Transport = (
            transport
            if transport is not None
            else transport_from_settings(self.settings)
        )
        self.retry_policy = RetryPolicy.from_settings(self.settings)
        self.preparer = Preparer(self.settings)
        self.dkim_signer = self.preparer.dkim_signer
        # Every reply and error a transport hands back passes through it before
        # it becomes a result, a journal entry, a log record or a raised error.
        self.redactor = Redactor.from_settings(self.settings)

    async def aclose(self) -> None:
        """Close the transport's connections."""
        await self.transport.aclose()

    def prepare(
        self,
        message: Message,
        /,
        *,
        message_id: str | None = None,
        date: str | None = None,
    ) -> OutgoingMessage:
        """Assign a Message-ID and Date, serialise the message and sign it (DKIM).

        It is signed here, once: every retry sends these same bytes.

        Args:
            message: The message.
            message_id: Reuse this Message-ID (angle brackets included) instead
                of making a new one: a resend then carries the same ID, so
                receivers can tell it is the same message.
            date: Reuse this Date (a journal resume), so that the bytes and
                their DKIM signature are those of the first attempt.

        Raises:
            ConfigError: The message has no sender and ``MAILER_FROM`` is not
                set, or its sender does not align with ``MAILER_DKIM_DOMAIN``.
            MessageError: The message is over ``MAILER_MAX_RECIPIENTS`` or
                ``MAILER_MAX_MESSAGE_SIZE``, or a file attachment is unreadable.
        """
        return self.preparer.prepare(message, message_id=message_id, date=date)

    @property
    def accepts_prepared(self) -> bool:
        """Return whether a PreparedMessage goes out as it is, with nothing skipped.

        True when no hook would see the message (none before, none after, no
        ``MAILER_REDIRECT_TO``), no telemetry traces it, and ``send`` is ours
        (a test that replaced it sees every message as a Message).
        """
        hooks = self.hooks
        return (
            not hooks.changes_messages
            and not hooks.after
            and self.telemetry is None
            and not self._send_is_replaced()
        )

    async def send(
        self,
        message: Message,
        /,
        *,
        message_id: str | None = None,
        recipients: Sequence[str] | None = None,
        observer: AttemptObserver | None = None,
        date: str | None = None,
    ) -> SendResult:
        """Send one message, retrying the recipients that were deferred.

        A 4xx reply, a lost connection or a timeout defers the recipients it hit;
        they are tried again, alone, after an exponential backoff with full
        jitter, until ``MAILER_MAX_ATTEMPTS`` or ``MAILER_SEND_DEADLINE`` runs
        out. A 5xx reply is final. Every attempt carries the same bytes, hence
        the same Message-ID.

        Args:
            message: The message.
            message_id: Reuse this Message-ID (to resend a message that may
                have gone out already).
            recipients: Send only to these envelope recipients (to finish a
                message that others have accepted already).
            observer: Told before and after each attempt (the journal).
            date: Reuse this Date (with ``message_id``: a journal resume).

        Returns:
            The result: attempts, each recipient's final status, the server's
            last reply, the Message-ID. Its status is ``failed`` (transient)
            when some recipients accepted the message and others were still
            deferred when the attempts ran out.

        Raises:
            ConfigError: No sender is known for the message.
            DeliveryError: No recipient accepted the message (a subclass says
                why; ``message_id``, ``attempts`` and ``ambiguous`` are set).
        """
        request = SendRequest(
            message,
            message_id=message_id,
            recipients=None if recipients is None else tuple(recipients),
            observer=observer,
            date=date,
        )
        return await self._send_one(request, _ALONE)

    async def _send_one(self, request: SendRequest, control: SendControl) -> SendResult:
        """Send one message under ``control`` (a batch's, or the null one).

        The before hooks run first; the after hooks and the telemetry see the
        final result, whatever it is (also when it is raised).
        """
        started = time.monotonic()
        message = request.message
        if isinstance(message, PreparedMessage):
            return await self._send_prepared(message, request, control, started)
        trace = self.telemetry.start(message) if self.telemetry is not None else None
        attempts: MessageAttempts | None = None
        try:
            if self.hooks.changes_messages:
                message = await self.hooks.run_before(message)
            outgoing = self.prepare(
                message, message_id=request.message_id, date=request.date
            )
            attempts = MessageAttempts(
                outgoing, _kept_recipients(request, outgoing, message)
            )
            try:
                result = await self._send_attempts(
                    attempts, request.observer, control, trace
                )
            except asyncio.CancelledError:
                if not control.abandoning:
                    raise
                # Shutdown grace is over: report what is known, nothing is lost.
                result = attempts.abandoned_result()
        except Exception as exc:
            failed = failed_result(message, exc)
            await self._finished(message, failed, attempts, trace, started)
            raise
        await self._finished(message, result, attempts, trace, started)
        return result

    async def _send_prepared(
        self,
        prepared: PreparedMessage,
        request: SendRequest,
        control: SendControl,
        started: float,
    ) -> SendResult:
        """Send a message prepared earlier: no hook, no serialising, the same attempts.

        Raises:
            ConfigError: This client has hooks or telemetry, which a prepared
                message would skip (``accepts_prepared``).
        """
        if not self.accepts_prepared:
            raise ConfigError(
                "a prepared message cannot pass through this client's hooks or "
                "telemetry; send the Message",
                key="hooks",
            )
        attempts = MessageAttempts(prepared, request.recipients)
        try:
            try:
                result = await self._send_attempts(attempts, request.observer, control)
            except asyncio.CancelledError:
                if not control.abandoning:
                    raise
                result = attempts.abandoned_result()
        except Exception as exc:
            log_outcome(
                prepared,
                failed_result(prepared, exc),
                relay=attempts.relay,
                duration=time.monotonic() - started,
            )
            raise
        log_outcome(
            prepared, result, relay=attempts.relay, duration=time.monotonic() - started
        )
        return result

    async def _finished(
        self,
        message: Message,
        result: SendResult,
        attempts: MessageAttempts | None,
        trace: MessageTrace | None,
        started: float,
    ) -> None:
        """Log the outcome, tell the telemetry, then the after hooks."""
        duration = time.monotonic() - started
        relay = attempts.relay if attempts is not None else None
        log_outcome(message, result, relay=relay, duration=duration)
        if trace is not None:
            trace.finished(result, relay=relay, duration=duration)
        if self.hooks.after:
            await self.hooks.run_after(message, result)

    async def _send_attempts(
        self,
        attempts: MessageAttempts,
        observer: AttemptObserver | None,
        control: SendControl,
        trace: MessageTrace | None = None,
    ) -> SendResult:
        while True:
            if not await control.admit(attempts):
                return attempts.pending_result(control.reason)
            try:
                # In a batch, a transaction slot is held only while the attempt
                # runs: a message waiting for its retry holds none.
                async with control.slot():
                    if control.is_halted:
                        return attempts.pending_result(control.reason)
                    retry_in = await self._attempt(attempts, observer, control, trace)
            finally:
                control.attempt_done(attempts)
            if retry_in is None:
                break
            if not await control.sleep(retry_in):
                return attempts.pending_result(control.reason)
        if attempts.any_accepted:
            return attempts.result()
        raise attempts.error()

    async def _attempt(
        self,
        attempts: MessageAttempts,
        observer: AttemptObserver | None,
        control: SendControl,
        trace: MessageTrace | None = None,
    ) -> float | None:
        """Run one transaction; return the wait before the next one, or None."""
        if observer is not None:
            await _notify(observer.attempt_starting(attempts), control)
        attempts.begin()
        progress = DeliveryProgress(_content_hook(observer, attempts, control))
        attempts.progress = progress
        started_ns = time.time_ns() if trace is not None else 0
        try:
            attempts.in_flight = True
            transport = self.transport
            if reports_progress(transport):
                delivery = await transport.deliver_with_progress(
                    attempts.envelope(), attempts.outgoing.content, progress
                )
            else:
                # This transport does not say when the content starts: assume
                # at once (a cut-short attempt is then ambiguous).
                progress.content_starting()
                delivery = await transport.deliver(
                    attempts.envelope(), attempts.outgoing.content
                )
            delivery = self._redacted(delivery)
        except DeliveryError as exc:
            self.redactor.error(exc)
            verdict = attempts.record_error(exc, control.judge(exc))
            if verdict is Verdict.FATAL:
                control.stop(fatal_reason(exc, self.settings))
            if trace is not None:
                _trace_attempt(trace, attempts, started_ns, exc.reply, exc)
        except Exception as exc:
            # A bug, not a server reply: record it so nothing is left "sending".
            self.redactor.error(exc)
            attempts.in_flight = False
            attempts.record_error(exc)
            if observer is not None:
                await _notify(observer.attempt_ended(attempts, retry_in=None), control)
            raise
        else:
            attempts.record_delivery(delivery)
            if trace is not None:
                _trace_attempt(trace, attempts, started_ns, delivery.reply, None)
        # Left True when the attempt is cancelled: it may have delivered.
        attempts.in_flight = False
        retry_in = None
        if not attempts.is_finished:
            retry_in = self.retry_policy.next_delay(
                attempts.attempts, attempts.elapsed()
            )
        if observer is not None:
            await _notify(observer.attempt_ended(attempts, retry_in=retry_in), control)
        return retry_in

    def _redacted(self, delivery: Delivery) -> Delivery:
        """Return ``delivery`` with every password form hidden in its replies."""
        if not self.redactor:
            return delivery
        return Delivery(
            delivery.accepted,
            {
                rcpt: self.redactor.reply(reply)
                for rcpt, reply in delivery.refused.items()
            },
            self.redactor.reply(delivery.reply),
            delivery.relay,
        )

    async def send_many(
        self,
        messages: Iterable[Sendable] | AsyncIterable[Sendable],
        /,
        *,
        on_result: Callable[[SendResult], None] | None = None,
        stop: asyncio.Event | None = None,
        in_flight: int | None = None,
    ) -> list[SendResult]:
        """Send messages concurrently over the client's connections.

        A failure is recorded in that message's result; it never cancels or
        hides the others. Messages are pulled from ``messages`` only as room
        frees up (see ``stream``), so a generator is consumed lazily; the list
        returned holds every result, so for huge batches prefer ``stream``.

        Args:
            messages: The messages to send, or SendRequests (a message with a
                Message-ID to reuse, recipients to keep to, an observer), from
                any iterable or async iterable.
            on_result: Called with each result as soon as it is known.
            stop: Set it to stop the batch (on a signal, for instance).
            in_flight: Transactions handed to the transport at once (see
                ``stream``).

        Returns:
            One result per message, in input order.

        Raises:
            Exception: What ``messages`` raised while being read, once the sends
                already started have ended.
        """
        results: list[SendResult | None] = []
        stream = self.stream(messages, stop=stop, in_flight=in_flight)
        async for index, result in stream:
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            results[index] = result
            if on_result is not None:
                on_result(result)
        return [result for result in results if result is not None]

    async def stream(
        self,
        messages: Iterable[Sendable] | AsyncIterable[Sendable],
        /,
        *,
        stop: asyncio.Event | None = None,
        in_flight: int | None = None,
    ) -> AsyncIterator[tuple[int, SendResult]]:
        """Send messages concurrently and yield each result as it completes.

        At most ``in_flight`` transactions are handed to the transport at once
        (which uses at most ``MAILER_CONCURRENCY`` connections). A message
        waiting for its retry holds none, so it does not hold up the others;
        up to ``WAITING_ROOM`` (100) such messages wait side by side, beyond
        which reading ``messages`` pauses. Memory stays flat however many
        messages there are::

            async for index, result in client.stream(messages):
                print(index, result.status)

        The batch stops taking messages when ``stop`` is set, or when an
        attempt shows that every message would fail (a refused login, a TLS
        failure): the messages it did not finish, and every one after them,
        end ``pending``. After ``stop``, attempts in flight get
        ``MAILER_SHUTDOWN_GRACE`` seconds, then they are cut off. Until the
        first attempt has succeeded, attempts run one at a time, so a refused
        login is tried once, not once per connection.

        Args:
            messages: The messages (or SendRequests) to send, from any iterable
                or async iterable, pulled lazily.
            stop: Set it to stop the batch (on a signal, for instance).
            in_flight: Transactions handed to the transport at once; default
                ``3 x MAILER_CONCURRENCY``, so that each connection has its next
                message ready (PIPELINING chains it into the same round trip).
                The journal uses ``MAILER_CONCURRENCY``, so that a crash leaves
                no more than that many messages in doubt.

        Yields:
            ``(index, result)``: the message's position in ``messages`` (from 0)
            and its result, in completion order. A failure is a failed result,
            never an exception.

        Raises:
            Exception: What ``messages`` raised while being read, once the sends
                already started have ended.
        """
        batch = BatchControl(
            in_flight=in_flight or BATCH_DEPTH * self.settings.concurrency,
            grace=self.settings.shutdown_grace,
        )
        attempt = partial(self._run_in_batch, batch)
        async with batch.watching(stop):
            done_items = stream_batch(messages, attempt, max_running=batch.max_running)
            async for done in done_items:
                yield done.index, done.result

    async def _run_in_batch(self, batch: BatchControl, item: Sendable) -> SendResult:
        """Run one message of a batch; one it never started still reaches the hooks."""
        reached = False

        async def send(request: SendRequest, control: SendControl) -> SendResult:
            nonlocal reached
            reached = True
            return await self._send_recorded(request, control)

        result = await batch.run(send, item)
        if not reached:
            # The batch had stopped before this message's turn: it ends
            # pending, and the log and the after hooks hear of it too.
            message = as_request(item).message
            log_outcome(message, result, relay=None, duration=0.0)
            if self.hooks.after and isinstance(message, Message):
                await self.hooks.run_after(message, result)
        return result

    async def _send_recorded(
        self, request: SendRequest, control: SendControl
    ) -> SendResult:
        try:
            if self._send_is_replaced() and isinstance(request.message, Message):
                # A test replaced the seam: every message of the batch goes
                # through it, as plain send(message) whenever it can.
                if request.is_plain:
                    return await self.send(request.message)
                return await self.send(
                    request.message,
                    message_id=request.message_id,
                    recipients=request.recipients,
                    observer=request.observer,
                    date=request.date,
                )
            return await self._send_one(request, control)
        except MailerError as exc:
            return failed_result(request.message, exc)
        except Exception as exc:
            logger.exception("unexpected error while sending")
            return failed_result(request.message, exc)

    def _send_is_replaced(self) -> bool:
        """Return whether ``send`` is not ours (a mock, a patch, a subclass's)."""
        return getattr(self.send, "__func__", None) is not _SEND


# The seam as defined here; MessageClient._send_is_replaced compares with it.
_SEND = MessageClient.send

# The control of a send on its own: no slots, no gate, no stop.
_ALONE = SendControl()


def _content_hook(
    observer: object, attempts: MessageAttempts, control: SendControl
) -> Callable[[], None] | None:
    """Return what tells ``observer`` that the content starts, if it wants to know.

    If the observer cannot record it (a journal that cannot be written), the
    content is not sent: the attempt fails as a transient DeliveryError (the
    message was not delivered, so it stays to send) and the batch stops.
    """
    if not observes_content(observer):
        return None

    def content_starting() -> None:
        try:
            observer.content_starting(attempts)
        except Exception as exc:
            control.stop(f"stopped: {exc}")
            raise DeliveryError(f"not sent: {exc}", transient=True) from exc

    return content_starting


def _kept_recipients(
    request: SendRequest, outgoing: OutgoingMessage, message: Message
) -> tuple[str, ...] | None:
    """Return the recipients to send to: the request's, within the final envelope.

    A before hook (or the redirect) may have changed the envelope: a resend to
    some recipients must then never reach an address the hooks took out.

    Raises:
        RefusedByHookError: The hooks took out every recipient of the resend.
    """
    if request.recipients is None or message is request.message:
        return request.recipients
    allowed = set(outgoing.envelope.rcpt_tos)
    kept = tuple(r for r in request.recipients if r in allowed)
    if not kept:
        raise RefusedByHookError(
            "the hooks took out every recipient this resend was for",
            hook="before_send",
        )
    return kept


def _trace_attempt(
    trace: MessageTrace,
    attempts: MessageAttempts,
    started_ns: int,
    reply: Reply | None,
    error: BaseException | None,
) -> None:
    trace.attempt_ended(
        started_ns=started_ns,
        relay=attempts.relay,
        size=len(attempts.outgoing.content),
        reply=reply,
        error=error,
        deferred=len(attempts.deferred),
    )


async def _notify(call: Awaitable[None], control: SendControl) -> None:
    """Await an observer; if it fails (a journal that cannot be written), stop."""
    try:
        await call
    except Exception as exc:
        # Sending what cannot be recorded would break the journal's promise.
        control.stop(f"stopped: {exc}")
        raise


def failed_result(
    message: Message | PreparedMessage, error: BaseException
) -> SendResult:
    """Return the result saying that ``message`` was not sent because of ``error``."""
    reply = getattr(error, "reply", None)
    text = describe_error(error)
    refused = getattr(error, "refused", {})
    return SendResult.of(
        SendStatus.FAILED,
        to=to_addresses(message),
        message_id=getattr(error, "message_id", None),
        recipients={
            recipient: classify_reply(own) for recipient, own in refused.items()
        },
        refused=refused,
        reply=reply,
        error=text,
        transient=bool(getattr(error, "transient", False)),
        attempts=getattr(error, "attempts", 0),
        ambiguous=bool(getattr(error, "ambiguous", False)),
    )


# The test seam: while mailer.testing.use_transport() (the mail_outbox fixture)
# is active, clients from generate_message_client() deliver through the
# transport this makes instead of SMTP. Set and restored only by that helper.
transport_override: Callable[[MailerSettings], Transport] | None = None


def generate_message_client(
    settings: MailerSettings | None = None, *, limiters: LimiterFactory | None = None
) -> MessageClient:
    """Return the MessageClient that application code should send with.

    Code that sends mail calls this factory rather than building a client, so
    tests can swap what it returns: ``mailer.testing``'s ``mail_outbox``
    fixture makes it return clients on an in-memory transport, or patch it
    where it is looked up (``mailer.bulk.sending`` for ``send_messages``)::

        with patch("mailer.bulk.sending.generate_message_client") as factory: ...

    Args:
        settings: Default ``MailerSettings()`` (environment and ``.env``).
        limiters: Makes each relay's rate limiter (``mailer worker`` passes
            the one the queue's workers share); default one per process.
    """
    settings = settings if settings is not None else MailerSettings()
    override = transport_override
    if override is not None:
        return MessageClient(settings, transport=override(settings))
    if limiters is not None:
        transport = transport_from_settings(settings, limiters=limiters)
        return MessageClient(settings, transport=transport)
    return MessageClient(settings)
