"""Send a batch under a journal: start it, or resume it where a previous run ended.

What a resume does with each message, by its journal state:

* ``sent``: left alone (never sent twice on purpose);
* ``failed`` after a 5xx (or a bug): left alone, reported again;
* ``pending``: sent;
* ``deferred``, or ``failed`` on a transient reply: sent again, with the same
  Message-ID, to the recipients that have not accepted or refused it yet;
* ``sending``: the previous run ended during an attempt, perhaps after the
  final dot. It is marked ambiguous and resent with the same Message-ID, so a
  receiver can tell the copies apart (RFC 1047: no SMTP client can close this
  gap).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer.bulk.journal import BatchIdentity, Journal, JournalEntry, JournalState
from mailer.bulk.recipients import InvalidRow, Recipient
from mailer.bulk.report import ResumeCounts
from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.delivery.control import SendRequest
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.state import MessageAttempts
from mailer.exceptions import MailerError
from mailer.replies import RecipientStatus

if TYPE_CHECKING:
    from mailer.delivery.client import MessageClient


def count_states(counts: Mapping[tuple[JournalState, bool], int]) -> ResumeCounts:
    """Return what a resume will do, from the journal's (state, transient) counts."""

    def total(state: JournalState, transient: bool | None = None) -> int:
        return sum(
            n
            for (s, t), n in counts.items()
            if s is state and (transient is None or t is transient)
        )

    return ResumeCounts(
        already_sent=total(JournalState.SENT),
        refused=total(JournalState.FAILED, transient=False),
        pending=total(JournalState.PENDING),
        deferred=total(JournalState.DEFERRED),
        failed_transient=total(JournalState.FAILED, transient=True),
        in_doubt=total(JournalState.SENDING),
    )


def rows_digest(rows: Iterable[Recipient | InvalidRow]) -> str:
    """Return a digest of every row, so a journal notices another (or edited) file."""
    digest = hashlib.sha256()
    for row in rows:
        if isinstance(row, Recipient):
            item: Any = [row.line, row.email, row.name, dict(row.context)]
        else:
            item = [row.line, row.error]
        digest.update(json.dumps(item, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


class JournalObserver:
    """Write each attempt of one message to the journal (an AttemptObserver)."""

    def __init__(self, journal: Journal, entry: JournalEntry) -> None:
        self.journal = journal
        self.entry = entry
        self._earlier_attempts = entry.attempts

    async def attempt_starting(self, attempts: MessageAttempts, /) -> None:
        """Commit ``sending`` with the Message-ID before the first SMTP command."""
        entry = self.entry
        entry.state = JournalState.SENDING
        entry.message_id = attempts.message_id
        entry.date = attempts.outgoing.date or entry.date
        entry.attempts = self._earlier_attempts + attempts.attempts + 1
        entry.next_attempt_at = None
        await self.journal.record(entry)

    async def attempt_ended(
        self, attempts: MessageAttempts, /, *, retry_in: float | None
    ) -> None:
        """Commit the outcome: sent, deferred (with the next time), or failed."""
        entry = self.entry
        entry.attempts = self._earlier_attempts + attempts.attempts
        entry.ambiguous = entry.ambiguous or attempts.ambiguous
        entry.recipients.update(attempts.statuses)
        for recipient, status in attempts.statuses.items():
            if status is RecipientStatus.ACCEPTED:
                entry.replies.pop(recipient, None)
        entry.replies.update(attempts.replies)
        entry.reply = attempts.last_reply
        deferred = [
            r for r, s in entry.recipients.items() if s is RecipientStatus.DEFERRED
        ]
        accepted = RecipientStatus.ACCEPTED in entry.recipients.values()
        error = attempts.last_error
        entry.next_attempt_at = None
        if deferred and retry_in is not None:
            entry.state = JournalState.DEFERRED
            entry.next_attempt_at = time.time() + retry_in
        elif deferred:
            entry.state = JournalState.FAILED
        elif accepted:
            entry.state = JournalState.SENT
        else:
            entry.state = JournalState.FAILED
        entry.transient = bool(deferred)
        entry.error = None
        if entry.state is not JournalState.SENT:
            entry.error = (
                str(error)
                if isinstance(error, MailerError)
                else f"{type(error).__name__}: {error}"
                if error is not None
                else f"{len(deferred)} recipient(s) still deferred: {entry.reply}"
            )
        await self.journal.record(entry)


def result_from_entry(entry: JournalEntry) -> SendResult:
    """Return the report line of a message, from its journal entry."""
    status = {
        JournalState.SENT: SendStatus.SENT,
        JournalState.FAILED: SendStatus.FAILED,
    }.get(entry.state, SendStatus.PENDING)
    error = entry.error
    if status is SendStatus.PENDING and error is None:
        error = "not sent: the batch stopped before its turn"
    return SendResult.of(
        status,
        to=(entry.email,),
        message_id=entry.message_id,
        recipients=entry.recipients,
        refused=entry.replies,
        reply=entry.reply,
        error=error,
        transient=entry.transient or status is SendStatus.PENDING,
        attempts=entry.attempts,
        ambiguous=entry.ambiguous,
    )


def reported_result(entry: JournalEntry, result: SendResult) -> SendResult:
    """Return the report line of a message this run handled: its journal entry.

    The entry has the whole story (earlier runs' attempts and recipients). A
    message this run did not finish keeps the run's reason and ambiguity
    (cut off during an attempt at shutdown, it may have been delivered).
    """
    reported = result_from_entry(entry)
    if reported.status is not SendStatus.PENDING:
        return reported
    return replace(
        reported,
        error=result.error or reported.error,
        ambiguous=reported.ambiguous or result.ambiguous,
    )


async def stream_with_journal(
    journal_path: Path | str,
    *,
    template_name: str,
    source_label: str,
    fingerprint: str,
    rows: Callable[[], Iterator[tuple[int, Recipient | InvalidRow]]],
    render: Callable[[Recipient], Message],
    client_factory: Callable[[MailerSettings], MessageClient],
    settings: MailerSettings,
    stop: asyncio.Event | None = None,
    on_resume: Callable[[ResumeCounts], None] | None = None,
) -> AsyncIterator[tuple[int, int, SendResult]]:
    """Send the batch, recording every attempt; resume if the journal exists.

    Every message of the batch is yielded once: first those a previous run
    finished (sent, or refused for good) as the journal has them, then the
    others as this run ends them (``pending`` if it stopped before their
    turn).

    Args:
        journal_path: The SQLite journal file.
        template_name: The template set (part of the journal's identity).
        source_label: What the recipients are (a path), for messages.
        fingerprint: The digest of every row (``rows_digest``), made while the
            rows were checked, so the journal can tell another file.
        rows: Returns the numbered rows afresh on each call.
        render: Renders one row into a Message.
        client_factory: ``generate_message_client``, as looked up by the caller.
        settings: The settings.
        stop: Set it to stop the batch.
        on_resume: Called, when the journal exists, with what it held.

    Yields:
        ``(position, line, result)``: the row's position in the batch, its
        line in the recipients file, and the message's result.

    Raises:
        JournalError: The journal belongs to another batch, is locked, or
            cannot be written.
    """
    identity = BatchIdentity(
        template=template_name,
        source=source_label,
        fingerprint=fingerprint,
    )
    journal, resumed = await Journal.open(journal_path, identity)
    try:
        if not resumed:
            await journal.add_messages(
                (position, row.line, row.email)
                for position, row in rows()
                if isinstance(row, Recipient)
            )
        else:
            if on_resume is not None:
                on_resume(count_states(await journal.counts()))
            await journal.mark_in_doubt(
                "in flight when the previous run ended: it may have been delivered"
            )
            # What earlier runs finished comes first, read in chunks.
            for entry in journal.iter_entries():
                if entry.is_done:
                    yield entry.position, entry.line, result_from_entry(entry)
        settled: deque[JournalEntry] = deque()  # nobody left to send to: reported
        sending: dict[int, JournalEntry] = {}  # request index -> entry, in flight
        requests = _requests(journal, rows(), render, settings, settled, sending)
        async with client_factory(settings) as client:
            # MAILER_CONCURRENCY transactions at most, so that a crash leaves
            # no more than that many messages 'sending' (in doubt).
            results = client.stream(requests, stop=stop, in_flight=settings.concurrency)
            async for index, result in results:
                while settled:
                    entry = settled.popleft()
                    yield entry.position, entry.line, result_from_entry(entry)
                entry = sending.pop(index)
                if _refused_unsent(entry, result):
                    # Refused before any attempt (a before_send hook, a size
                    # limit): final, so a resume does not try it again.
                    entry.state = JournalState.FAILED
                    entry.transient = False
                    entry.error = result.error
                    await journal.record(entry)
                yield entry.position, entry.line, reported_result(entry, result)
        for entry in settled:
            yield entry.position, entry.line, result_from_entry(entry)
    finally:
        await journal.aclose()


def _refused_unsent(entry: JournalEntry, result: SendResult) -> bool:
    """Return whether ``result`` failed for good before this run tried it."""
    return (
        result.status is SendStatus.FAILED
        and not result.transient
        and result.attempts == 0
        and entry.state is not JournalState.SENDING
    )


def _requests(
    journal: Journal,
    rows: Iterator[tuple[int, Recipient | InvalidRow]],
    render: Callable[[Recipient], Message],
    settings: MailerSettings,
    settled: deque[JournalEntry],
    sending: dict[int, JournalEntry],
) -> Iterator[SendRequest]:
    # Rows and journal entries both come in position order: walk them together
    # (the journal has no entry for an invalid row).
    entries = journal.iter_entries()
    entry = next(entries, None)
    index = 0
    for position, row in rows:
        while entry is not None and entry.position < position:
            entry = next(entries, None)
        if entry is None or entry.position != position:
            continue
        if entry.is_done:
            continue  # reported before the sending started
        if not isinstance(row, Recipient):
            continue  # (journal entries are made for recipients only)
        try:
            message = render(row)
        except MailerError:
            continue  # reported by the check pass
        recipients = None
        if entry.settled:
            sender = message.sender or settings.default_sender
            envelope = message.envelope(sender) if sender is not None else None
            if envelope is not None:
                recipients = tuple(
                    r for r in envelope.rcpt_tos if r not in entry.settled
                )
                if not recipients:
                    settled.append(entry)
                    continue  # nobody left to send to
        sending[index] = entry
        index += 1
        yield SendRequest(
            message,
            message_id=entry.message_id,
            recipients=recipients,
            observer=JournalObserver(journal, entry),
            # With the Message-ID, the Date makes the resent bytes (and their
            # DKIM signature) the same as those of the first attempt.
            date=entry.date,
        )
