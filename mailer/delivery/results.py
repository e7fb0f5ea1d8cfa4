"""Describe what happened to one message: SendResult and its status."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mailer.replies import RecipientStatus, Reply


class SendStatus(enum.StrEnum):
    """The final state of one message."""

    SENT = "sent"
    FAILED = "failed"
    PENDING = "pending"  # not finished: the batch was stopped before its turn


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of sending one message.

    Attributes:
        status: ``sent`` when the server accepted the message for at least one
            recipient and none is still deferred; ``failed`` otherwise;
            ``pending`` when a stopped batch never finished it.
        to: The message's To addresses (bare addresses).
        message_id: The Message-ID header, angle brackets included; ``None`` when
            the message failed before one was assigned.
        accepted: Envelope recipients the server accepted.
        refused: The server's reply for each refused recipient.
        reply: The server's last reply (to DATA on success; the failing reply
            otherwise, when there was one).
        error: A one-line description of the failure, for failed messages.
        transient: For failed messages, whether trying again may succeed.
        attempts: SMTP transactions tried for this message (0: never tried).
        ambiguous: An attempt failed after the message content was sent and
            before the server's reply, so that attempt may have delivered it;
            any resend used the same Message-ID.
        recipients: The final status of each envelope recipient.
    """

    status: SendStatus
    to: tuple[str, ...]
    message_id: str | None
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, Reply] = field(default_factory=dict)
    reply: Reply | None = None
    error: str | None = None
    transient: bool = False
    attempts: int = 1
    ambiguous: bool = False
    recipients: Mapping[str, RecipientStatus] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        status: SendStatus,
        *,
        to: Iterable[str],
        message_id: str | None,
        recipients: Mapping[str, RecipientStatus],
        refused: Mapping[str, Reply],
        reply: Reply | None = None,
        error: str | None = None,
        transient: bool = False,
        attempts: int = 0,
        ambiguous: bool = False,
    ) -> SendResult:
        """Return a result, deriving who accepted from each recipient's status.

        Every part of mailer that makes a SendResult (the retry loop, the
        batch, the journal, the test doubles) makes it here, so ``accepted``
        and ``recipients`` can never disagree.
        """
        return cls(
            status=status,
            to=tuple(to),
            message_id=message_id,
            accepted=tuple(
                r for r, s in recipients.items() if s is RecipientStatus.ACCEPTED
            ),
            refused=dict(refused),
            reply=reply,
            error=error,
            transient=transient,
            attempts=attempts,
            ambiguous=ambiguous,
            recipients=dict(recipients),
        )

    @property
    def is_sent(self) -> bool:
        """Return whether the server accepted the message for some recipient."""
        return self.status is SendStatus.SENT

    def to_report(self) -> dict[str, Any]:
        """Return the JSON-ready report line for this message."""
        line: dict[str, Any] = {
            "to": ", ".join(self.to),
            "status": self.status.value,
            "reply": self.reply.to_dict() if self.reply else None,
            "message_id": self.message_id,
            "attempts": self.attempts,
        }
        if self.ambiguous:
            line["ambiguous"] = True
        if self.refused:
            line["refused"] = {rcpt: r.to_dict() for rcpt, r in self.refused.items()}
        if any(s is not RecipientStatus.ACCEPTED for s in self.recipients.values()):
            line["recipients"] = {r: s.value for r, s in self.recipients.items()}
        if self.error is not None:
            line["error"] = self.error
        return line
