"""Track one message across attempts: each recipient's status, replies, ambiguity.

``MessageAttempts`` is the bookkeeping of the retry loop in ``MessageClient.send``:
it records what each attempt did to each recipient, says who is still to be
tried, and turns the whole story into a ``SendResult`` (or the error to raise).
Observers (the journal) read it before and after each attempt.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeGuard, runtime_checkable

from mailer.content.message import Envelope, Message
from mailer.delivery.results import SendResult, SendStatus
from mailer.exceptions import DeliveryError, RecipientsRefusedError
from mailer.replies import (
    RecipientStatus,
    Reply,
    Verdict,
    classify_error,
    classify_reply,
)
from mailer.transports.base import Delivery, DeliveryProgress


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message ready for a transport: its envelope, bytes, Message-ID and Date."""

    message: Message
    envelope: Envelope
    content: bytes
    message_id: str
    date: str = ""  # recorded by the journal, so a resume rebuilds the same bytes


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A message serialised, signed and checked against our limits, ready to send.

    A batch prepares each row in its check pass (``mailer.bulk.spool``), so
    that the send pass only speaks SMTP. Before-send hooks never see it (its
    bytes are final): a client sends it only when it has no hook
    (``MessageClient.accepts_prepared``).

    Attributes:
        envelope: MAIL FROM and every RCPT TO (Bcc included).
        content: The wire-ready bytes.
        message_id: Its Message-ID, angle brackets included.
        date: Its Date header.
        to: The bare addresses of its To header (for the result).
    """

    envelope: Envelope
    content: bytes
    message_id: str
    date: str
    to: tuple[str, ...]

    @classmethod
    def of(cls, outgoing: OutgoingMessage) -> PreparedMessage:
        """Return what ``outgoing`` holds, without the Message it came from."""
        return cls(
            outgoing.envelope,
            outgoing.content,
            outgoing.message_id,
            outgoing.date,
            tuple(address.addr_spec for address in outgoing.message.to),
        )

    @property
    def recipient_count(self) -> int:
        """Return how many envelope recipients it has."""
        return len(self.envelope.rcpt_tos)


def to_addresses(message: Message | PreparedMessage) -> tuple[str, ...]:
    """Return the bare To addresses of a message, prepared or not."""
    if isinstance(message, PreparedMessage):
        return message.to
    return tuple(address.addr_spec for address in message.to)


class AttemptObserver(Protocol):
    """Something told about each attempt of one message (the journal is one).

    Both methods run while the attempt holds its concurrency slot, so what they
    record is never behind what the server saw by more than the transactions
    in flight.
    """

    async def attempt_starting(self, attempts: MessageAttempts, /) -> None:
        """Record that an attempt is about to start (before any SMTP command)."""
        ...

    async def attempt_ended(
        self, attempts: MessageAttempts, /, *, retry_in: float | None
    ) -> None:
        """Record how the attempt ended; ``retry_in`` seconds until the next one."""
        ...


@runtime_checkable
class ContentObserver(Protocol):
    """An observer that is also told, synchronously, when an attempt's content starts.

    The journal notes it (one ``write(2)``), so that after a crash it can tell
    the attempts that may have delivered from those that cannot have.
    """

    def content_starting(self, attempts: MessageAttempts, /) -> None:
        """Record that the current attempt is about to send the content.

        Raises:
            Exception: It could not be recorded; the content is then not sent.
        """
        ...


def observes_content(observer: object) -> TypeGuard[ContentObserver]:
    """Return whether ``observer`` is a ContentObserver (cached by class)."""
    cls = type(observer)
    known = _OBSERVES_CONTENT.get(cls)
    if known is None:
        known = callable(getattr(cls, "content_starting", None))
        _OBSERVES_CONTENT[cls] = known
    return known


_OBSERVES_CONTENT: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


class MessageAttempts:
    """The state of one message's delivery, attempt after attempt.

    Every target recipient starts DEFERRED ("still to try"). An attempt moves
    each one to ACCEPTED, to REJECTED (5xx) or leaves it DEFERRED (4xx, lost
    connection, timeout); the next attempt goes to the DEFERRED ones only.

    Args:
        outgoing: The prepared message (its bytes never change between
            attempts, so a resend carries the same Message-ID).
        recipients: The envelope recipients to try (default: all of them).
    """

    def __init__(
        self,
        outgoing: OutgoingMessage | PreparedMessage,
        recipients: Sequence[str] | None = None,
    ) -> None:
        self.outgoing = outgoing
        targets = outgoing.envelope.rcpt_tos if recipients is None else recipients
        self.statuses: dict[str, RecipientStatus] = dict.fromkeys(
            targets, RecipientStatus.DEFERRED
        )
        self.replies: dict[str, Reply] = {}
        self.attempts = 0
        self.ambiguous = False
        self.first_attempt_at: float | None = None
        self.last_reply: Reply | None = None
        self.last_error: BaseException | None = None
        self.verdict: Verdict | None = None
        self.in_flight = False  # between the first SMTP command and the outcome
        self.progress: DeliveryProgress | None = None  # of the current attempt
        self.relay: str | None = None  # the relay of the last attempt, if known

    @property
    def message_id(self) -> str:
        """Return the Message-ID, the same in every attempt."""
        return self.outgoing.message_id

    def with_status(self, status: RecipientStatus) -> tuple[str, ...]:
        """Return the recipients that have ``status``, in envelope order."""
        return tuple(r for r, s in self.statuses.items() if s is status)

    @property
    def deferred(self) -> tuple[str, ...]:
        """Return the recipients still to try."""
        return self.with_status(RecipientStatus.DEFERRED)

    def envelope(self) -> Envelope:
        """Return the envelope for the next attempt: the deferred recipients only."""
        envelope = self.outgoing.envelope
        deferred = self.deferred
        if deferred == envelope.rcpt_tos:
            return envelope  # the usual first attempt: no copy to validate again
        return replace(envelope, rcpt_tos=deferred)

    def elapsed(self) -> float:
        """Return seconds since the first attempt started (0 before it)."""
        if self.first_attempt_at is None:
            return 0.0
        return time.monotonic() - self.first_attempt_at

    def begin(self) -> None:
        """Count a new attempt."""
        if self.first_attempt_at is None:
            self.first_attempt_at = time.monotonic()
        self.attempts += 1

    def record_delivery(self, delivery: Delivery) -> None:
        """Record a transaction the server completed (250 after the final dot)."""
        self.verdict = None
        self.last_error = None
        self.last_reply = delivery.reply
        self.relay = delivery.relay
        for recipient in delivery.accepted:
            self.statuses[recipient] = RecipientStatus.ACCEPTED
            self.replies.pop(recipient, None)
        for recipient, reply in delivery.refused.items():
            self.statuses[recipient] = classify_reply(reply)
            self.replies[recipient] = reply

    def record_error(
        self, error: BaseException, verdict: Verdict | None = None
    ) -> Verdict:
        """Record a failed attempt and return what it means.

        Args:
            error: What failed.
            verdict: What it means, when the batch judged it (a configuration
                error at its first attempt); by default ``classify_error``.
        """
        verdict = classify_error(error) if verdict is None else verdict
        self.verdict = verdict
        self.last_error = error
        self.relay = getattr(error, "relay", None)
        reply = getattr(error, "reply", None)
        if reply is not None:
            self.last_reply = reply
        if isinstance(error, DeliveryError) and error.ambiguous:
            self.ambiguous = True
        tried = self.deferred
        if isinstance(error, RecipientsRefusedError):
            # Each recipient has its own reply: 5xx ones are done, 4xx ones wait.
            for recipient in tried:
                own = error.refused.get(recipient, reply)
                if own is not None:
                    self.replies[recipient] = own
                    self.statuses[recipient] = classify_reply(own)
            return verdict
        if verdict is Verdict.PERMANENT:
            # A FATAL error (refused login) says nothing about the recipients:
            # they stay DEFERRED, to be sent once the configuration is fixed.
            for recipient in tried:
                self.statuses[recipient] = RecipientStatus.REJECTED
        if reply is not None:
            for recipient in tried:
                self.replies[recipient] = reply
        return verdict

    @property
    def is_finished(self) -> bool:
        """Return whether no recipient is left to try, or the batch must stop."""
        return not self.deferred or self.verdict is Verdict.FATAL

    def result(self) -> SendResult:
        """Return the outcome so far, when at least one recipient accepted.

        The status is ``sent`` when nobody is still deferred, ``failed``
        (transient) when some recipients accepted and others were still
        deferred when attempts ran out.
        """
        deferred = self.deferred
        error = None
        if deferred:
            error = (
                f"{len(deferred)} recipient(s) still deferred after "
                f"{self.attempts} attempt(s)"
                + (f": {self.last_reply}" if self.last_reply else "")
            )
        return SendResult.of(
            SendStatus.FAILED if deferred else SendStatus.SENT,
            to=to_addresses(
                self.outgoing
                if isinstance(self.outgoing, PreparedMessage)
                else self.outgoing.message
            ),
            message_id=self.message_id,
            recipients=self.statuses,
            refused=self.replies,
            reply=self.last_reply,
            error=error,
            transient=bool(deferred),
            attempts=self.attempts,
            ambiguous=self.ambiguous,
        )

    def pending_result(self, reason: str) -> SendResult:
        """Return a ``pending`` result: the batch stopped before this one finished."""
        result = self.result()
        return replace(
            result,
            status=SendStatus.PENDING,
            error=f"{'not finished' if self.attempts else 'not sent'}: {reason}",
            transient=True,
        )

    @property
    def may_have_delivered(self) -> bool:
        """Return whether the attempt in flight may have delivered the message.

        Only once its content has started (as the transport reports it; a
        transport that does not report is assumed to start at once).
        """
        progress = self.progress
        return self.in_flight and (progress is None or progress.content_started)

    def abandoned_result(self) -> SendResult:
        """Return a ``pending`` result for a send cut short at shutdown.

        Cut once its content had started, the message may have been
        delivered: it is ambiguous. Cut before, it cannot have been.
        """
        if self.may_have_delivered:
            reason = (
                "abandoned during an attempt at shutdown, its content sent; it "
                "may have been delivered"
            )
        elif self.in_flight:
            reason = "abandoned at shutdown before its content was sent"
        else:
            reason = "the batch was stopped"
        result = self.pending_result(reason)
        return replace(result, ambiguous=self.ambiguous or self.may_have_delivered)

    def error(self) -> DeliveryError:
        """Return the error to raise when no recipient accepted the message.

        It is the last attempt's error, given the Message-ID, the attempt count,
        the ambiguity of any attempt and every recipient's last reply.
        """
        last = self.last_error
        if isinstance(last, DeliveryError):
            error = last
        else:
            error = RecipientsRefusedError(
                f"no recipient accepted the message: {self.last_reply}",
                refused=self.replies,
                reply=self.last_reply,
            )
        if isinstance(error, RecipientsRefusedError):
            error.refused = {**error.refused, **self.replies}
        error.transient = bool(self.deferred) and self.verdict is not Verdict.FATAL
        error.message_id = self.message_id
        error.attempts = self.attempts
        error.ambiguous = error.ambiguous or self.ambiguous
        return error

    @property
    def any_accepted(self) -> bool:
        """Return whether some recipient accepted the message."""
        return RecipientStatus.ACCEPTED in self.statuses.values()
