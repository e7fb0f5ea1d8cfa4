"""Send a batch under a journal: start it, or resume it where a previous run ended.

What a resume does with each message, by its journal state:

* ``sent``: left alone (never sent twice on purpose);
* ``failed`` after a 5xx (or a bug): left alone, reported again;
* ``pending``: sent;
* ``deferred``, or ``failed`` on a transient reply: sent again, with the same
  Message-ID, to the recipients that have not accepted or refused it yet;
* ``sending``: the previous run ended during an attempt. If the journal's
  content log shows that the attempt had not started sending the content, it
  cannot have been delivered, and it is sent again like a deferred message.
  Otherwise (the content may have left, perhaps the final dot too) it is
  marked ambiguous and resent with the same Message-ID, so a receiver can
  tell the copies apart (RFC 1047: no SMTP client can close this gap).

Rows are matched to their entries by position, address and fingerprint: a
recipients file that changes under the run stops it (see ``identity.py``).
When the check pass spooled the prepared messages (``mailer.bulk.spool``),
the journal is filled and the batch walked from the spool instead: the file
is not read again, and a message is rendered again only to resend it with the
Message-ID and Date an earlier run gave it (the same bytes as then).
A message resent is rebuilt from the template, its files and the DKIM
key, with the Message-ID and Date the journal recorded; a digest of the first
attempt's bytes makes sure that a message which may have been delivered is
never resent as a different copy (``JournalObserver._check_same_bytes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.bulk.identity import CheckedRows
from mailer.bulk.journal import BatchIdentity, Journal, JournalEntry, JournalState
from mailer.bulk.recipients import DuplicateRow, InvalidRow, Recipient
from mailer.bulk.report import ResumeCounts
from mailer.bulk.spool import Spool, SpooledRow
from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.delivery.control import SendRequest
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.state import MessageAttempts, PreparedMessage
from mailer.delivery.telemetry import log_outcome
from mailer.exceptions import (
    ContentChangedError,
    JournalError,
    MailerError,
    RecipientsChangedError,
    describe_error,
)
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


class JournalObserver:
    """Write each attempt of one message to the journal (an AttemptObserver)."""

    def __init__(self, journal: Journal, entry: JournalEntry) -> None:
        self.journal = journal
        self.entry = entry
        self._earlier_attempts = entry.attempts

    async def attempt_starting(self, attempts: MessageAttempts, /) -> None:
        """Commit ``sending`` with the Message-ID before the first SMTP command.

        Raises:
            ContentChangedError: An earlier attempt may have delivered this
                message, and it now builds different bytes (see
                ``_check_same_bytes``).
        """
        entry = self.entry
        try:
            self._check_same_bytes(attempts.outgoing.content)
        except ContentChangedError as exc:
            # Not sent, still to send once the files are back: the journal
            # and the report say why (the batch stops: see client._notify).
            entry.state, entry.transient, entry.error = (
                JournalState.DEFERRED,
                True,
                str(exc),
            )
            entry.next_attempt_at = None
            await self.journal.record(entry)
            raise
        entry.state = JournalState.SENDING
        entry.message_id = attempts.message_id
        entry.date = attempts.outgoing.date or entry.date
        entry.attempts = self._earlier_attempts + attempts.attempts + 1
        entry.next_attempt_at = None
        await self.journal.record(entry)

    def _check_same_bytes(self, content: bytes) -> None:
        """Record the digest of ``content``; refuse to send other bytes as a copy.

        A message resent with its Message-ID after an attempt that may have
        delivered it (ambiguous, or accepted for some recipients) must be the
        same message: a receiver keeps one copy per Message-ID, and a DKIM
        signature covers the bytes. The journal rebuilds it from the template,
        its files and the DKIM key, so if one of them changed between the runs
        the copy would differ. Then nothing more is sent (the batch stops, the
        message stays pending) until they are put back.
        """
        entry = self.entry
        digest = hashlib.sha256(content).hexdigest()
        if entry.digest == digest:
            return
        if entry.digest is not None and entry.may_have_arrived:
            raise ContentChangedError(
                f"line {entry.line} ({entry.email}) may have been delivered "
                "by an earlier run, and it now builds a different message (its "
                "template, an attachment, an inline image or the DKIM key "
                "changed since): put them back as they were to resume, or "
                "start a new journal",
                path=str(self.journal.path),
            )
        entry.digest = digest

    def content_starting(self, attempts: MessageAttempts, /) -> None:
        """Note, before the first byte of content, that this attempt may deliver.

        A ``write(2)`` to the content log, no commit (see ``contentlog.py``).
        """
        self.journal.mark_content(self.entry.position, self.entry.attempts)

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
                describe_error(error)
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
    checked: CheckedRows,
    rows: Callable[[], Iterable[Recipient | InvalidRow]],
    render: Callable[[Recipient], Message],
    client_factory: Callable[[MailerSettings], MessageClient],
    settings: MailerSettings,
    dedupe: bool = False,
    stop: asyncio.Event | None = None,
    on_resume: Callable[[ResumeCounts], None] | None = None,
    spool: Spool | None = None,
) -> AsyncIterator[tuple[int, int, SendResult | DuplicateRow]]:
    """Send the batch, recording every attempt; resume if the journal exists.

    Every message of the batch is yielded once: first those a previous run
    finished (sent, or refused for good) as the journal has them, then the
    others as this run ends them (``pending`` if it stopped before their
    turn). Each row read is matched to its journal entry by position, address
    and fingerprint; if the recipients file changed under the run, no further
    message starts and the rest are yielded ``pending``, with the reason.

    Args:
        journal_path: The SQLite journal file.
        template_name: The template set (part of the journal's identity).
        checked: What the check pass saw of every row (its digest is the
            journal's fingerprint; each row is compared with it).
        rows: Returns the rows afresh on each call.
        render: Renders one row into a Message.
        client_factory: ``generate_message_client``, as looked up by the caller.
        settings: The settings.
        dedupe: Skip rows whose address an earlier row has (no entry).
        stop: Set it to stop the batch.
        on_resume: Called, when the journal exists, with what it held.
        spool: The valid rows' prepared messages, from the check pass: then
            the rows are not read again (``rows`` is not called).

    Yields:
        ``(position, line, outcome)``: the row's position in the batch, its
        line in the recipients file, and the message's result (or, with
        ``dedupe``, the row skipped).

    Raises:
        JournalError: The journal belongs to another batch, is locked, or
            cannot be written.
        RecipientsChangedError: The file changed before anything was sent.
    """
    identity = BatchIdentity(
        template=template_name,
        source=checked.label,
        fingerprint=checked.digest,
        dedupe=dedupe,
    )
    journal, resumed = await Journal.open(journal_path, identity)
    try:
        if not resumed:
            entries = (
                _new_entries(checked, rows(), dedupe)
                if spool is None
                else _spooled_entries(checked, spool, dedupe)
            )
            await journal.create(identity, entries)
        held = count_states(await journal.counts()) if resumed else None
        in_doubt, cut = await journal.begin_run()
        if held is not None:
            if on_resume is not None:
                on_resume(replace(held, in_doubt=in_doubt, cut_before_content=cut))
            # What earlier runs finished comes first, read in chunks.
            for entry in journal.iter_entries():
                if entry.is_done:
                    yield entry.position, entry.line, result_from_entry(entry)
        walk = _Walk(journal, checked, render, settings, dedupe)
        async with client_factory(settings) as client:
            # MAILER_CONCURRENCY transactions at most, so that a crash leaves
            # no more than that many messages 'sending' (in doubt).
            items = (
                _walked(checked, rows) if spool is None else _from_spool(spool, checked)
            )
            results = client.stream(
                walk.requests(items), stop=stop, in_flight=settings.concurrency
            )
            async for index, result in results:
                async for item in walk.drain():
                    yield item
                entry = walk.sending.pop(index)
                yield entry.position, entry.line, await walk.finish(entry, result)
        async for item in walk.drain():
            yield item
        async for item in walk.unreached():
            yield item
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


def _new_entries(
    checked: CheckedRows, rows: Iterable[Recipient | InvalidRow], dedupe: bool
) -> Iterator[tuple[int, int, str, str]]:
    """Yield ``(position, line, email, fingerprint)`` of every message to send."""
    for position, row in checked.replay(rows):
        if not isinstance(row, Recipient) or checked.is_invalid(position):
            continue
        if dedupe and checked.is_repeat(position):
            continue
        # The row is the one checked (replay compared them): its fingerprint too.
        yield position, row.line, row.email, checked.fingerprint(position)


def _spooled_entries(
    checked: CheckedRows, spool: Spool, dedupe: bool
) -> Iterator[tuple[int, int, str, str]]:
    """Yield ``(position, line, email, fingerprint)`` of every spooled message."""
    for number in range(spool.chunks):
        for spooled in spool.read(number, remove=False):
            position, row = spooled.position, spooled.row
            if dedupe and checked.is_repeat(position):
                continue
            yield position, row.line, row.email, checked.fingerprint(position)


# (position, row, what the check pass spooled for it, if it did)
WalkItem = tuple[int, Recipient | InvalidRow, SpooledRow | None]


def _walked(
    checked: CheckedRows, rows: Callable[[], Iterable[Recipient | InvalidRow]]
) -> Iterator[WalkItem]:
    """Yield the rows read again, each compared with the one checked (replay)."""
    for position, row in checked.replay(rows()):
        yield position, row, None


def _from_spool(spool: Spool, checked: CheckedRows) -> Iterator[WalkItem]:
    """Yield the spooled rows (the valid ones), each with what was spooled.

    Raises:
        RecipientsChangedError: The recipients file changed meanwhile.
    """
    for spooled in spool.rows():
        checked.check_unchanged()
        yield spooled.position, spooled.row, spooled


def _matches(entry: JournalEntry, row: Recipient, fingerprint: str) -> bool:
    """Return whether ``entry`` is the journal's record of ``row``."""
    if entry.email != row.email:
        return False
    return entry.fingerprint is None or entry.fingerprint == fingerprint


Outcome = tuple[int, int, SendResult | DuplicateRow]


class _Walk:
    """Walk the rows and the journal entries together, making the send requests.

    Rows and entries both come in position order (the journal has no entry
    for an invalid row, nor for a repeat under ``dedupe``). What the walk
    settles itself (a repeat, a message nobody is left to send to, a row
    that no longer renders) waits in ``settled`` until ``drain``.
    """

    def __init__(
        self,
        journal: Journal,
        checked: CheckedRows,
        render: Callable[[Recipient], Message],
        settings: MailerSettings,
        dedupe: bool,
    ) -> None:
        self.journal = journal
        self.checked = checked
        self.render = render
        self.settings = settings
        self.dedupe = dedupe
        self.sending: dict[int, JournalEntry] = {}  # request index -> entry
        self.settled: deque[tuple[JournalEntry | None, Outcome]] = deque()
        self.handled = 0  # rows dealt with, in position order
        self.changed: RecipientsChangedError | None = None

    def requests(self, items: Iterable[WalkItem]) -> Iterator[SendRequest]:
        """Yield a SendRequest for each row still to send (a plain generator)."""
        entries = self.journal.iter_entries()
        entry = next(entries, None)
        index = 0
        try:
            for position, row, spooled in items:
                if not isinstance(row, Recipient) or self.checked.is_invalid(position):
                    self.handled = position
                    continue  # reported by the check pass
                if self.dedupe and self.checked.is_repeat(position):
                    skipped = DuplicateRow(row.line, row.email)
                    self.settled.append((None, (position, row.line, skipped)))
                    self.handled = position
                    continue
                while entry is not None and entry.position < position:
                    entry = next(entries, None)
                entry = self._entry_of(position, row, entry)
                request = self._request(position, row, entry, spooled)
                self.handled = position
                if request is not None:
                    self.sending[index] = entry
                    index += 1
                    yield request
        except RecipientsChangedError as exc:
            self.changed = exc

    def _entry_of(
        self, position: int, row: Recipient, entry: JournalEntry | None
    ) -> JournalEntry:
        """Return ``entry`` if it is the journal's record of ``row``, else raise."""
        fingerprint = self.checked.fingerprint(position)  # replay: the row's own
        if (
            entry is None
            or entry.position != position
            or not _matches(entry, row, fingerprint)
        ):
            raise RecipientsChangedError(
                f"{self.checked.label}: line {row.line} ({row.email}) is not "
                "the message the journal has at its place",
                path=self.checked.label,
            )
        return entry

    def _request(
        self,
        position: int,
        row: Recipient,
        entry: JournalEntry,
        spooled: SpooledRow | None = None,
    ) -> SendRequest | None:
        if entry.is_done:
            return None  # reported before the sending started
        if spooled is not None and spooled.failure is not None:
            # It could not be prepared (over a size limit...): failed for
            # good before any attempt, as the client would have said.
            entry.state, entry.transient = JournalState.FAILED, False
            entry.error = spooled.failure.error
            log_outcome(
                None,
                spooled.failure,
                relay=None,
                duration=0.0,
                recipients=spooled.recipients,
            )
            self.settled.append((entry, (position, row.line, result_from_entry(entry))))
            return None
        if (
            spooled is not None
            and spooled.message is not None
            and entry.message_id is None
        ):
            return self._prepared_request(spooled.message, entry)
        try:
            message = self.render(row)
        except MailerError as exc:
            # Checked before, this row no longer renders (a file it names went
            # away...): it fails, recorded and reported, never dropped. A
            # resume tries it again.
            entry.state, entry.transient, entry.error = (
                JournalState.FAILED,
                True,
                f"no longer renders: {exc}",
            )
            self.settled.append(
                (
                    entry,
                    (
                        position,
                        row.line,
                        SendResult.of(
                            SendStatus.FAILED,
                            to=(entry.email,),
                            message_id=entry.message_id,
                            recipients=entry.recipients,
                            refused=entry.replies,
                            error=entry.error,
                            transient=True,
                            attempts=entry.attempts,
                            ambiguous=entry.ambiguous,
                        ),
                    ),
                )
            )
            return None
        recipients = None
        if entry.settled:
            sender = message.sender or self.settings.default_sender
            envelope = message.envelope(sender) if sender is not None else None
            if envelope is not None:
                recipients = tuple(
                    r for r in envelope.rcpt_tos if r not in entry.settled
                )
                if not recipients:
                    # Nobody left to send to.
                    outcome = (position, row.line, result_from_entry(entry))
                    self.settled.append((None, outcome))
                    return None
        return SendRequest(
            message,
            message_id=entry.message_id,
            recipients=recipients,
            observer=JournalObserver(self.journal, entry),
            # With the Message-ID, the Date makes the resent bytes (and their
            # DKIM signature) the same as those of the first attempt.
            date=entry.date,
        )

    def _prepared_request(
        self, prepared: PreparedMessage, entry: JournalEntry
    ) -> SendRequest:
        """Return the request for a message never attempted: its spooled bytes."""
        # Never attempted (no Message-ID yet), so no recipient is settled.
        return SendRequest(prepared, observer=JournalObserver(self.journal, entry))

    async def drain(self) -> AsyncIterator[Outcome]:
        """Record and yield what the walk settled itself."""
        while self.settled:
            entry, outcome = self.settled.popleft()
            if entry is not None:
                await self.journal.record(entry)
            yield outcome

    async def finish(self, entry: JournalEntry, result: SendResult) -> SendResult:
        """Return a message's report line; record it if nothing else did.

        A message refused before any attempt (a before_send hook, a size
        limit) is final, so a resume does not try it again; one whose attempt
        the stop cut off is recorded as the summary reports it.
        """
        if _refused_unsent(entry, result):
            entry.state = JournalState.FAILED
            entry.transient = False
            entry.error = result.error
            await self.journal.record(entry)
        reported = reported_result(entry, result)
        if (
            reported.status is SendStatus.PENDING
            and entry.state is JournalState.SENDING
        ):
            # Cut off at the end of the shutdown grace: the journal says what
            # the summary says (ambiguous only if its content had started).
            entry.state, entry.transient = JournalState.DEFERRED, True
            entry.ambiguous, entry.error = reported.ambiguous, reported.error
            entry.next_attempt_at = None
            # If this cannot be written, the entry stays 'sending' and the
            # journal's close (or the next run) settles it from the content log.
            with contextlib.suppress(JournalError):
                await self.journal.record(entry)
        return reported

    async def unreached(self) -> AsyncIterator[Outcome]:
        """Yield ``pending`` for every message after a change of the file."""
        if self.changed is None:
            return
        reason = (
            f"not sent: {self.changed}; the journal keeps the batch as it was "
            "checked: put the file back as it was to resume it"
        )
        for entry in self.journal.iter_entries():
            if entry.position > self.handled and not entry.is_done:
                yield (
                    entry.position,
                    entry.line,
                    replace(result_from_entry(entry), error=reason),
                )
        for position in range(self.handled + 1, len(self.checked) + 1):
            if self.dedupe and self.checked.is_repeat(position):
                line = self.checked.line(position)
                yield position, line, DuplicateRow(line, "")
