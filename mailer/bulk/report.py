"""Count a batch's outcomes: BatchReport, and what a resumed journal held."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailer.bulk.identity import CheckSummary
from mailer.bulk.recipients import DuplicateRow, InvalidRow
from mailer.delivery.results import SendResult, SendStatus


@dataclass(frozen=True, slots=True)
class ResumeCounts:
    """What a resumed journal held when the run started (see ``mailer.bulk.resume``)."""

    already_sent: int = 0
    refused: int = 0
    pending: int = 0
    deferred: int = 0
    failed_transient: int = 0
    in_doubt: int = 0
    cut_before_content: int = 0

    @property
    def to_send(self) -> int:
        """Return how many messages the resume sends."""
        return (
            self.pending
            + self.deferred
            + self.failed_transient
            + self.in_doubt
            + self.cut_before_content
        )

    def describe(self) -> str:
        """Return the one-line summary printed when a run resumes a journal."""
        cut = ""
        if self.cut_before_content:
            cut = (
                f", {self.cut_before_content} cut short before their content "
                "was sent (not delivered: sent normally)"
            )
        return (
            f"resumed: {self.already_sent} already sent and {self.refused} refused "
            f"for good (not sent again); sending {self.to_send}: {self.pending} "
            f"pending, {self.deferred} deferred, {self.failed_transient} failed "
            f"on a transient error, {self.in_doubt} in flight when the last run "
            f"ended (ambiguous: resent with the same Message-ID){cut}"
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
        duplicates: Rows not sent because an earlier row has their address
            (only with ``dedupe``); they do not make the batch fail.
        results: One result per message sent or failed, in input order (empty
            when the caller asked not to keep them).
        invalid_rows: The skipped rows with their line numbers.
        duplicate_rows: The rows ``dedupe`` skipped.
        resumed: What the journal held, when this run resumed one.
        checked: What the check pass found (rows, bad rows, repeated
            addresses), when the rows were checked before sending.
    """

    sent: int = 0
    failed: int = 0
    invalid: int = 0
    pending: int = 0
    ambiguous: int = 0
    duplicates: int = 0
    results: list[SendResult] = field(default_factory=list)
    invalid_rows: list[InvalidRow] = field(default_factory=list)
    duplicate_rows: list[DuplicateRow] = field(default_factory=list)
    resumed: ResumeCounts | None = None
    checked: CheckSummary | None = None

    @property
    def total(self) -> int:
        """Return how many rows the batch had."""
        return self.sent + self.failed + self.pending + self.invalid + self.duplicates

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

    def add_duplicate(self, row: DuplicateRow) -> None:
        """Count and keep one row that ``dedupe`` skipped."""
        self.duplicates += 1
        self.duplicate_rows.append(row)

    def summary(self) -> str:
        """Return the one-line summary the CLI prints."""
        pending = f", {self.pending} pending" if self.pending else ""
        ambiguous = f", {self.ambiguous} ambiguous" if self.ambiguous else ""
        duplicates = (
            f", {self.duplicates} repeated address(es) skipped"
            if self.duplicates
            else ""
        )
        return (
            f"{self.sent} sent, {self.failed} failed{pending}, {self.invalid} invalid"
            f"{duplicates} ({self.total} total){ambiguous}"
        )
