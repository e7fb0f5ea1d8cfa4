"""Describe a delivery journal for ``mailer status``: counts, then every failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailer.bulk.journal import JournalEntry, JournalState, read_summary


@dataclass(slots=True)
class JournalStatus:
    """What a journal says about its batch.

    Attributes:
        path: The journal file.
        template: The template set the batch sends.
        source: The recipients the batch was started for.
        counts: Messages per state (every state listed, zeros included).
        ambiguous: Messages that may have been delivered twice.
        failures: The failed messages, in batch order.
        sending_started: Of the ``sending`` messages, those whose content
            had started (None: unknown, all count as ambiguous).
        log_missing: The last run did not end cleanly and the journal's
            write-ahead log is missing (a resume is refused).
    """

    path: Path
    template: str
    source: str
    counts: dict[JournalState, int]
    ambiguous: int
    failures: list[JournalEntry] = field(default_factory=list)
    sending_started: int | None = None
    log_missing: bool = False

    @property
    def total(self) -> int:
        """Return how many messages the batch has."""
        return sum(self.counts.values())

    @property
    def is_complete(self) -> bool:
        """Return whether every message was sent."""
        return self.counts[JournalState.SENT] == self.total

    def lines(self) -> list[str]:
        """Return the report ``mailer status`` prints."""
        counts = ", ".join(
            f"{self.counts[state]} {state.value}" for state in JournalState
        )
        out = [
            f"journal {self.path}: template {self.template!r}, recipients "
            f"{self.source}, {self.total} message(s)",
            counts,
        ]
        sending, started = self.counts[JournalState.SENDING], self.sending_started
        if sending and started is None:
            out.append(
                f"{sending} sending: in flight now, or cut short by a crash (a "
                "resume resends them as ambiguous)"
            )
        elif sending and started is not None:
            out.append(
                f"{sending} sending: in flight now, or cut short by a crash; "
                f"{started} had sent their content (a resume resends them as "
                f"ambiguous), {sending - started} had not (resent plainly)"
            )
        if self.log_missing:
            out.append(
                f"warning: the run that used it did not end cleanly and "
                f"{self.path.name}-wal is missing: these counts may lack its "
                "last records, and a resume is refused"
            )
        out.append(
            f"{self.ambiguous} ambiguous (may have been delivered twice, same "
            "Message-ID)"
        )
        for entry in self.failures:
            kind = "transient, a resume retries it" if entry.transient else "final"
            out.append(
                f"failed line {entry.line} {entry.email}: {entry.error} "
                f"({kind}; {entry.attempts} attempt(s))"
            )
        return out


def journal_status(path: Path | str) -> JournalStatus:
    """Read the journal at ``path`` (without locking it: a run may be going on).

    Raises:
        JournalError: The file is missing or not a journal.
    """
    summary = read_summary(path)
    return JournalStatus(
        path=Path(path),
        template=summary.meta.get("template", "?"),
        source=summary.meta.get("source", "?"),
        counts=summary.counts,
        ambiguous=summary.ambiguous,
        failures=summary.failures,
        sending_started=summary.sending_started,
        log_missing=summary.log_missing,
    )
