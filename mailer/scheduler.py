"""Run a batch of sends: bounded, stoppable, and never blocked by a waiting retry.

``run_batch`` pulls requests from a source lazily and runs each in its own
task. Concurrency is bounded twice: ``MessageClient`` lets at most
``MAILER_CONCURRENCY`` SMTP transactions run at once, and at most
``WAITING_ROOM`` more messages may be in progress (most of them waiting for a
retry, which holds no connection). So a message in backoff never holds up the
others, and memory stays bounded whatever the size of the source.

A batch stops taking messages when its ``stop`` event is set (a signal) or
when an attempt fails in a way every message would (a refused login). What it
did not finish ends ``pending``, never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from mailer.attempts import AttemptObserver, MessageAttempts
from mailer.message import Message
from mailer.results import SendResult, SendStatus
from mailer.retry import Verdict

# Messages that may be in progress beyond the transactions in flight: room for
# the ones waiting for a retry. Each holds its serialised bytes in memory.
WAITING_ROOM = 100


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A message for ``send_many``, with what its send should keep to.

    Attributes:
        message: The message.
        message_id: Reuse this Message-ID (a resend of a message that may have
            been delivered already).
        recipients: Send only to these envelope recipients.
        observer: Told before and after each attempt (the journal).
    """

    message: Message
    message_id: str | None = None
    recipients: tuple[str, ...] | None = None
    observer: AttemptObserver | None = None

    @property
    def is_plain(self) -> bool:
        """Return whether this is just a message, with no option."""
        return (
            self.message_id is None
            and self.recipients is None
            and self.observer is None
        )


class BatchControl:
    """What the sends of one batch share: the stop signal and the first-attempt gate.

    Until one attempt has ended in a way that is not fatal, attempts run one at
    a time: if the login is refused, only one login was tried (a burst of bad
    logins can lock the account), and the batch stops before the next.
    """

    def __init__(self) -> None:
        self.halted = asyncio.Event()
        self.reason = ""
        self.abandoning = False
        self._gate = asyncio.Lock()
        self._proven = False
        self._holder: MessageAttempts | None = None

    def stop(self, reason: str) -> None:
        """Stop taking new attempts (the first reason given is kept)."""
        if not self.halted.is_set():
            self.reason = reason
            self.halted.set()

    async def admit(self, attempts: MessageAttempts) -> bool:
        """Wait for the right to start an attempt; return False if the batch stopped."""
        if self.halted.is_set():
            return False
        if not self._proven:
            await self._gate.acquire()
            if self.is_proven:  # another attempt opened the gate while we waited
                self._gate.release()
            else:
                self._holder = attempts
            if self.halted.is_set():
                self.attempt_done(attempts)
                return False
        return True

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
        try:
            await asyncio.wait_for(self.halted.wait(), delay)
        except TimeoutError:
            return True
        return False


_CURRENT: contextvars.ContextVar[BatchControl | None] = contextvars.ContextVar(
    "mailer_batch", default=None
)


def current_batch() -> BatchControl | None:
    """Return the batch the running send belongs to, if any."""
    return _CURRENT.get()


def _request(item: Message | SendRequest) -> SendRequest:
    return item if isinstance(item, SendRequest) else SendRequest(item)


def not_started(request: SendRequest, reason: str) -> SendResult:
    """Return the ``pending`` result of a message the batch never attempted."""
    return SendResult(
        status=SendStatus.PENDING,
        to=tuple(address.addr_spec for address in request.message.to),
        message_id=request.message_id,
        error=f"not sent: {reason}",
        transient=True,
        attempts=0,
    )


async def run_batch(
    send_one: Callable[[SendRequest], Awaitable[SendResult]],
    items: Iterable[Message | SendRequest],
    *,
    concurrency: int,
    grace: float,
    on_result: Callable[[SendResult], None] | None = None,
    stop: asyncio.Event | None = None,
) -> list[SendResult]:
    """Send every item with ``send_one`` and return the results in input order.

    Args:
        send_one: Sends one request and returns its result (never raises for
            a delivery failure).
        items: Messages or requests, pulled lazily.
        concurrency: Transactions in flight (``MAILER_CONCURRENCY``).
        grace: Seconds attempts in flight get after ``stop`` is set, before
            they are abandoned (ending ``pending``, possibly delivered).
        on_result: Called with each result as soon as it is known.
        stop: Set it to stop the batch.

    Raises:
        Exception: Whatever ``items`` raised, once the sends in flight ended.
    """
    batch = BatchControl()
    token = _CURRENT.set(batch)
    admission = asyncio.Semaphore(concurrency + WAITING_ROOM)
    results: dict[int, SendResult] = {}
    running: set[asyncio.Task[None]] = set()
    source: Iterator[Message | SendRequest] = iter(items)
    source_errors: list[Exception] = []

    def record(index: int, result: SendResult) -> None:
        results[index] = result
        if on_result is not None:
            on_result(result)

    async def run(index: int, request: SendRequest) -> None:
        try:
            result = await send_one(request)
        except asyncio.CancelledError:
            if not batch.abandoning:
                raise
            result = not_started(request, "abandoned at shutdown")
        finally:
            admission.release()
        record(index, result)

    async def watch(event: asyncio.Event) -> None:
        await event.wait()
        batch.stop("interrupted")
        if running:
            await asyncio.wait(set(running), timeout=grace)
        batch.abandoning = True
        for task in list(running):
            task.cancel()

    def next_item() -> Message | SendRequest | None:
        try:
            return next(source)
        except StopIteration:
            return None
        # Re-raised once the sends in flight have ended.
        except Exception as exc:  # noqa: BLE001
            source_errors.append(exc)
            return None

    watcher = asyncio.create_task(watch(stop)) if stop is not None else None
    index = 0
    try:
        async with asyncio.TaskGroup() as group:
            while not batch.halted.is_set():
                await admission.acquire()
                item = None if batch.halted.is_set() else next_item()
                if item is None:
                    admission.release()
                    break
                task = group.create_task(run(index, _request(item)))
                running.add(task)
                task.add_done_callback(running.discard)
                index += 1
        if batch.halted.is_set() and not source_errors:
            # Every message the batch will not send is still reported.
            while (item := next_item()) is not None:
                record(index, not_started(_request(item), batch.reason))
                index += 1
    finally:
        _CURRENT.reset(token)
        if watcher is not None:
            watcher.cancel()
    if source_errors:
        raise source_errors[0]
    return [results[position] for position in range(index)]
