"""Describe what happened to each message: server replies, deliveries, batch reports."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mailer.exceptions import InvalidRow

# RFC 3463 enhanced status code at the start of a reply text: "2.0.0 Ok".
_ENHANCED_STATUS = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: its code and text (multi-line replies joined by newlines)."""

    code: int
    text: str

    @property
    def enhanced_status(self) -> str | None:
        """Return the RFC 3463 enhanced status code ("5.1.1"), if the reply has one."""
        match = _ENHANCED_STATUS.match(self.text)
        return match.group(1) if match else None

    @property
    def is_transient(self) -> bool:
        """Return whether the reply is a 4xx: the same request may succeed later."""
        return 400 <= self.code < 500

    @property
    def is_success(self) -> bool:
        """Return whether the reply is positive (2xx, or 3xx intermediate)."""
        return 200 <= self.code < 400

    def to_dict(self) -> dict[str, Any]:
        """Return the reply as the report shows it.

        ``{"code": 550, "enhanced_status": "5.1.1", "text": "5.1.1 no such user"}``;
        ``enhanced_status`` is left out when the reply has none.
        """
        line: dict[str, Any] = {"code": self.code}
        if self.enhanced_status is not None:
            line["enhanced_status"] = self.enhanced_status
        line["text"] = self.text
        return line

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a transport reports for one SMTP transaction.

    Attributes:
        accepted: Envelope recipients the server accepted.
        refused: The reply for each recipient the server refused (partial refusal
            is data, not an exception).
        reply: The server's reply to the end of DATA.
    """

    accepted: tuple[str, ...]
    refused: Mapping[str, Reply]
    reply: Reply


class SendStatus(enum.StrEnum):
    """The final state of one message."""

    SENT = "sent"
    FAILED = "failed"
    PENDING = "pending"  # not finished: the batch was stopped before its turn


class RecipientStatus(enum.StrEnum):
    """Where one recipient of a message stands (see ``mailer.retry``)."""

    ACCEPTED = "accepted"  # the server took responsibility (250 to RCPT, then DATA)
    DEFERRED = "deferred"  # refused for now (4xx, lost connection, timeout)
    REJECTED = "rejected"  # refused for good (5xx): never retried


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


@dataclass(frozen=True, slots=True)
class ResumeCounts:
    """What a resumed journal held when the run started (see ``mailer.resume``)."""

    already_sent: int = 0
    refused: int = 0
    pending: int = 0
    deferred: int = 0
    failed_transient: int = 0
    in_doubt: int = 0

    @property
    def to_send(self) -> int:
        """Return how many messages the resume sends."""
        return self.pending + self.deferred + self.failed_transient + self.in_doubt

    def describe(self) -> str:
        """Return the one-line summary printed when a run resumes a journal."""
        return (
            f"resumed: {self.already_sent} already sent and {self.refused} refused "
            f"for good (not sent again); sending {self.to_send}: {self.pending} "
            f"pending, {self.deferred} deferred, {self.failed_transient} failed "
            f"on a transient error, {self.in_doubt} in flight when the last run "
            "ended (ambiguous: resent with the same Message-ID)"
        )


@dataclass(slots=True)
class BatchReport:
    """Counts and per-message results for a batch.

    Attributes:
        sent: Messages the server accepted.
        failed: Messages that were not sent.
        pending: Messages left unfinished because the batch was stopped (a
            signal, or an error every message would hit, such as a refused
            login).
        ambiguous: Messages that may have been delivered twice (see
            ``SendResult.ambiguous``), whatever their final status.
        invalid: Rows skipped because they did not render into a valid message
            (only with ``skip_invalid``).
        results: One result per message sent or failed, in input order (empty
            when the caller asked not to keep them).
        invalid_rows: The skipped rows with their line numbers.
        resumed: What the journal held, when this run resumed one.
    """

    sent: int = 0
    failed: int = 0
    invalid: int = 0
    pending: int = 0
    ambiguous: int = 0
    results: list[SendResult] = field(default_factory=list)
    invalid_rows: list[InvalidRow] = field(default_factory=list)
    resumed: ResumeCounts | None = None

    @property
    def total(self) -> int:
        """Return how many rows the batch had."""
        return self.sent + self.failed + self.pending + self.invalid

    @property
    def ok(self) -> bool:
        """Return whether every row was sent."""
        return self.failed == 0 and self.invalid == 0 and self.pending == 0

    def add(self, result: SendResult, *, keep: bool = True) -> None:
        """Count one result, and keep it unless told not to."""
        if result.is_sent:
            self.sent += 1
        elif result.status is SendStatus.PENDING:
            self.pending += 1
        else:
            self.failed += 1
        if result.ambiguous:
            self.ambiguous += 1
        if keep:
            self.results.append(result)

    def add_invalid(self, row: InvalidRow) -> None:
        """Count and keep one row that was skipped."""
        self.invalid += 1
        self.invalid_rows.append(row)

    def summary(self) -> str:
        """Return the one-line summary the CLI prints."""
        pending = f", {self.pending} pending" if self.pending else ""
        ambiguous = f", {self.ambiguous} ambiguous" if self.ambiguous else ""
        return (
            f"{self.sent} sent, {self.failed} failed{pending}, {self.invalid} invalid "
            f"({self.total} total){ambiguous}"
        )
