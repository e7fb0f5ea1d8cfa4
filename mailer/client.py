"""Send Messages: MessageClient (one or many, concurrently) and its factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from mailer.batch import stream_batch
from mailer.builder import format_date, new_message_id
from mailer.exceptions import ConfigError, DeliveryError, MailerError
from mailer.lifecycle import AsyncCloseable
from mailer.limits import check_message_limits
from mailer.message import Envelope, Message
from mailer.results import SendResult, SendStatus
from mailer.settings import MailerSettings
from mailer.transports.base import Transport
from mailer.transports.smtp import SMTPTransport

logger = logging.getLogger("mailer")

# Messages a batch keeps in progress per connection: one being sent, one whose
# envelope is chained behind it (PIPELINING), and one built and ready.
BATCH_DEPTH = 3


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message ready for a transport: its envelope, bytes and Message-ID."""

    message: Message
    envelope: Envelope
    content: bytes
    message_id: str


class MessageClient(AsyncCloseable):
    """Send messages through a transport (SMTP by default), sharing its connections.

    Use it as an async context manager so that its connections are closed::

        async with MessageClient(settings) as client:
            result = await client.send(message)

    Args:
        settings: Where and how to send; default ``MailerSettings()``.
        transport: What delivers the bytes; default an SMTPTransport built from
            ``settings``. Pass a MemoryTransport or MockTransport in tests.
    """

    def __init__(
        self,
        settings: MailerSettings | None = None,
        /,
        *,
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings if settings is not None else MailerSettings()
        self.transport: Transport = (
            transport if transport is not None else SMTPTransport(self.settings)
        )

    async def aclose(self) -> None:
        """Close the transport's connections."""
        await self.transport.aclose()

    def prepare(self, message: Message, /) -> OutgoingMessage:
        """Assign a Message-ID and Date and serialise the message.

        Raises:
            ConfigError: The message has no sender and ``MAILER_FROM`` is not set.
            MessageError: The message is over ``MAILER_MAX_RECIPIENTS`` or
                ``MAILER_MAX_MESSAGE_SIZE``.
        """
        sender = message.sender or self.settings.default_sender
        if sender is None:
            raise ConfigError(
                "MAILER_FROM: not set, and the message has no sender",
                key="MAILER_FROM",
            )
        message_id = new_message_id(sender)
        content = message.to_bytes(sender, message_id=message_id, date=format_date())
        envelope = message.envelope(sender)
        check_message_limits(envelope, content, self.settings)
        return OutgoingMessage(message, envelope, content, message_id)

    async def send(self, message: Message, /) -> SendResult:
        """Send one message.

        Returns:
            The result: accepted and refused recipients, the server's reply,
            the Message-ID.

        Raises:
            ConfigError: No sender is known for the message.
            DeliveryError: The message was not sent (a subclass says why; its
                ``message_id`` is set).
        """
        outgoing = self.prepare(message)
        try:
            delivery = await self.transport.deliver(outgoing.envelope, outgoing.content)
        except DeliveryError as exc:
            exc.message_id = outgoing.message_id
            logger.info("not sent %s: %s", outgoing.message_id, exc)
            raise
        logger.debug(
            "sent %s to %d recipient(s): %s",
            outgoing.message_id,
            len(delivery.accepted),
            delivery.reply,
        )
        return SendResult(
            status=SendStatus.SENT,
            to=tuple(address.addr_spec for address in message.to),
            message_id=outgoing.message_id,
            accepted=delivery.accepted,
            refused=delivery.refused,
            reply=delivery.reply,
        )

    async def send_many(
        self,
        messages: Iterable[Message] | AsyncIterable[Message],
        /,
        *,
        on_result: Callable[[SendResult], None] | None = None,
    ) -> list[SendResult]:
        """Send messages concurrently over the client's connections.

        A failure is recorded in that message's result; it never cancels or
        hides the others. Messages are pulled from ``messages`` only as room
        frees up (see ``stream``), so a generator is consumed lazily; the list
        returned holds every result, so for huge batches prefer ``stream``.

        Args:
            messages: The messages to send (any iterable or async iterable).
            on_result: Called with each result as soon as it is known.

        Returns:
            One result per message, in input order.

        Raises:
            Exception: What ``messages`` raised while being read, once the sends
                already started have ended.
        """
        results: list[SendResult | None] = []
        async for index, result in self.stream(messages):
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            results[index] = result
            if on_result is not None:
                on_result(result)
        return [result for result in results if result is not None]

    async def stream(
        self, messages: Iterable[Message] | AsyncIterable[Message], /
    ) -> AsyncIterator[tuple[int, SendResult]]:
        """Send messages concurrently and yield each result as it completes.

        At most ``BATCH_DEPTH * MAILER_CONCURRENCY`` messages are in progress at
        once (the transport uses at most ``MAILER_CONCURRENCY`` connections), so
        memory stays flat however many messages there are::

            async for index, result in client.stream(messages):
                print(index, result.status)

        Args:
            messages: The messages to send (any iterable or async iterable),
                pulled lazily.

        Yields:
            ``(index, result)``: the message's position in ``messages`` (from 0)
            and its result, in completion order. A failure is a failed result,
            never an exception.

        Raises:
            Exception: What ``messages`` raised while being read, once the sends
                already started have ended.
        """
        width = self.settings.concurrency * BATCH_DEPTH
        async for done in stream_batch(messages, self._attempt, max_running=width):
            yield done.index, done.result

    async def _attempt(self, message: Message, attempt: int) -> SendResult:
        # The seam for reply-aware retries (see mailer.batch): returning
        # RetryLater(delay) here parks the message without holding a slot.
        return await self._send_recorded(message)

    async def _send_recorded(self, message: Message) -> SendResult:
        try:
            return await self.send(message)
        except MailerError as exc:
            return failed_result(message, exc)
        except Exception as exc:
            logger.exception("unexpected error while sending")
            return failed_result(message, exc)


def failed_result(message: Message, error: BaseException) -> SendResult:
    """Return the result saying that ``message`` was not sent because of ``error``."""
    reply = getattr(error, "reply", None)
    text = (
        str(error)
        if isinstance(error, MailerError)
        else f"{type(error).__name__}: {error}"
    )
    return SendResult(
        status=SendStatus.FAILED,
        to=tuple(address.addr_spec for address in message.to),
        message_id=getattr(error, "message_id", None),
        refused=getattr(error, "refused", {}),
        reply=reply,
        error=text,
        transient=bool(getattr(error, "transient", False)),
    )


# The test seam: while mailer.testing.use_transport() (the mail_outbox fixture)
# is active, clients from generate_message_client() deliver through the
# transport this makes instead of SMTP. Set and restored only by that helper.
transport_override: Callable[[MailerSettings], Transport] | None = None


def generate_message_client(settings: MailerSettings | None = None) -> MessageClient:
    """Return the MessageClient that application code should send with.

    Code that sends mail calls this factory rather than building a client, so
    tests can swap what it returns: ``mailer.testing``'s ``mail_outbox``
    fixture makes it return clients on an in-memory transport, or patch it
    where it is looked up (``mailer.sending`` for ``send_messages``)::

        with patch("mailer.sending.generate_message_client") as factory: ...

    Args:
        settings: Default ``MailerSettings()`` (environment and ``.env``).
    """
    settings = settings if settings is not None else MailerSettings()
    override = transport_override
    if override is not None:
        return MessageClient(settings, transport=override(settings))
    return MessageClient(settings)
