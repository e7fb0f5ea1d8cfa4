"""Render a template for many recipients and send the messages: send_messages().

Tests replace the client by patching ``mailer.bulk.sending.generate_message_client``,
the name this module looks up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.bulk.identity import CheckedRows, CheckSummary
from mailer.bulk.journal import check_journal_path
from mailer.bulk.recipients import (
    DuplicateRow,
    InvalidRow,
    Recipient,
    RecipientFile,
    recipient_from_mapping,
)
from mailer.bulk.report import BatchReport, ResumeCounts
from mailer.bulk.resume import stream_with_journal
from mailer.config.settings import MailerSettings
from mailer.content.addresses import Address
from mailer.content.message import Message
from mailer.delivery.client import generate_message_client
from mailer.delivery.results import SendResult, SendStatus
from mailer.exceptions import (
    ConfigError,
    InvalidRecipientsError,
    MailerError,
    RecipientsChangedError,
)
from mailer.templates.sets import TemplateSet, load_template_set, render_set

RecipientRow = Recipient | InvalidRow | Mapping[str, Any]
RecipientSource = Iterable[RecipientRow] | AsyncIterable[RecipientRow]
Outcome = SendResult | InvalidRow  # a DuplicateRow is an InvalidRow


def _row(row: RecipientRow, position: int) -> Recipient | InvalidRow:
    if isinstance(row, Recipient | InvalidRow):
        return row
    return recipient_from_mapping(row, position)


def _rows(source: Iterable[RecipientRow]) -> Iterator[Recipient | InvalidRow]:
    for position, row in enumerate(source, start=1):
        yield _row(row, position)


def render_row(
    template_name: str,
    recipient: Recipient,
    *,
    settings: MailerSettings,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
    templates: TemplateSet | None = None,
) -> Message:
    """Render the template for one recipient (shared context under the row's own).

    Args:
        template_name: The template set.
        recipient: The row.
        settings: For the templates directory.
        context: Variables shared by every row.
        sender: The From address.
        templates: The set, already loaded (a batch loads it once).

    Raises:
        MailerError: The row does not render into a valid message.
    """
    values = {**(context or {}), **recipient.context}
    to: str | Address = recipient.email
    if recipient.name:
        to = Address.create(recipient.email, recipient.name, field="to")
    if templates is None:
        templates = load_template_set(template_name, settings.templates_dir)
    return render_set(templates, to=to, context=values, sender=sender)


def check_rows(
    template_name: str,
    recipients: Iterable[RecipientRow],
    *,
    settings: MailerSettings,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
) -> tuple[int, list[InvalidRow]]:
    """Render and validate every row without keeping the messages.

    Returns:
        How many rows are valid, and every bad row with its line number.
    """
    summary, errors = check_recipients(
        template_name, recipients, settings=settings, context=context, sender=sender
    )
    return summary.valid, errors


def check_recipients(
    template_name: str,
    recipients: Iterable[RecipientRow],
    *,
    settings: MailerSettings,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
) -> tuple[CheckSummary, list[InvalidRow]]:
    """Render and validate every row, and count the repeated addresses.

    Returns:
        The counts (valid and bad rows, rows repeating an earlier address),
        and every bad row with its line number.
    """
    job = _Job(
        template_name,
        load_template_set(template_name, settings.templates_dir),
        settings,
        context,
        sender,
    )
    checked = _check(job, recipients)
    return checked.rows.summary(), checked.errors


@dataclass(frozen=True, slots=True)
class _Job:
    """What every row of one batch is rendered with (the template set loaded once)."""

    template_name: str
    templates: TemplateSet
    settings: MailerSettings
    context: Mapping[str, Any] | None
    sender: str | None

    def render(self, row: Recipient) -> Message:
        return render_row(
            self.template_name,
            row,
            settings=self.settings,
            context=self.context,
            sender=self.sender,
            templates=self.templates,
        )


@dataclass(slots=True)
class _Checked:
    rows: CheckedRows  # each row's line and fingerprint, the digest, repeats
    errors: list[InvalidRow]


def _check(job: _Job, recipients: Iterable[RecipientRow]) -> _Checked:
    """Render every row once, keeping its fingerprint, and the errors."""
    checked = CheckedRows(_source_label(recipients))
    errors: list[InvalidRow] = []
    for row in _rows(recipients):
        if isinstance(row, InvalidRow):
            errors.append(row)
            checked.add(row, valid=False)
            continue
        try:
            job.render(row)
        except MailerError as exc:
            errors.append(InvalidRow(row.line, str(exc)))
            checked.add(row, valid=False)
        else:
            checked.add(row, valid=True)
    return _Checked(checked, errors)


@dataclass(frozen=True, slots=True)
class _Outcome:
    position: int  # order in the source, for reports kept in input order
    line: int
    result: Outcome


def _is_one_shot(source: RecipientSource) -> bool:
    if isinstance(source, AsyncIterable):
        return True  # treated as read-once: an async source may not replay
    return iter(source) is source


async def _collect(source: RecipientSource) -> list[RecipientRow]:
    if isinstance(source, AsyncIterable):
        return [row async for row in source]
    return list(source)


def _source_label(recipients: Iterable[RecipientRow]) -> str:
    if isinstance(recipients, RecipientFile):
        return str(recipients.path)
    return f"{type(recipients).__name__} of rows"


async def _outcomes(
    template_name: str,
    recipients: RecipientSource,
    *,
    context: Mapping[str, Any] | None,
    sender: str | None,
    settings: MailerSettings | None,
    skip_invalid: bool,
    journal: Path | str | None,
    stop: asyncio.Event | None,
    on_resume: Callable[[ResumeCounts], None] | None,
    dedupe: bool = False,
    on_checked: Callable[[CheckSummary], None] | None = None,
) -> AsyncIterator[_Outcome]:
    settings = settings if settings is not None else MailerSettings()
    if journal is not None:
        check_journal_path(journal)  # before the check pass, which may be long
    job = _Job(
        template_name,
        load_template_set(template_name, settings.templates_dir),
        settings,
        context,
        sender,
    )
    if sender is None and settings.default_sender is None:
        raise ConfigError(
            "MAILER_FROM: not set; nothing can be sent without a sender",
            key="MAILER_FROM",
        )
    # A batch that may be refused as a whole is checked before anything is
    # sent, which reads the rows twice, and a journal reads them again; so
    # does dedupe, which must know every address first. A one-shot source is
    # then collected first; with skip_invalid and neither, there is nothing to
    # refuse, so it streams once.
    if _is_one_shot(recipients) and (journal is not None or not skip_invalid or dedupe):
        recipients = await _collect(recipients)
    checked: CheckedRows | None = None
    if not _is_one_shot(recipients):
        assert isinstance(recipients, Iterable)  # noqa: S101 - collected above
        found = _check(job, recipients)
        if found.errors and not skip_invalid:
            raise InvalidRecipientsError(found.errors)
        checked = found.rows
        if on_checked is not None:
            on_checked(checked.summary())
        for position, error in enumerate(found.errors):
            yield _Outcome(-1 - position, error.line, error)

    if journal is not None:
        assert checked is not None  # noqa: S101 - a journal's rows are checked
        assert isinstance(recipients, Iterable)  # noqa: S101 - collected above
        rows = recipients
        journaled = stream_with_journal(
            journal,
            template_name=template_name,
            checked=checked,
            rows=lambda: _rows(rows),
            render=job.render,
            client_factory=generate_message_client,
            settings=settings,
            dedupe=dedupe,
            stop=stop,
            on_resume=on_resume,
        )
        async for position, line, result in journaled:
            yield _Outcome(position, line, result)
        return

    plain = _PlainRun(job, checked, dedupe)
    async with generate_message_client(settings) as client:
        async for index, result in client.stream(plain.messages(recipients), stop=stop):
            for outcome in plain.drain():
                yield outcome
            yield _Outcome(index, plain.lines.pop(index), result)
    for outcome in plain.drain():
        yield outcome
    for outcome in plain.unread():
        yield outcome


class _PlainRun:
    """The send pass without a journal: rows to messages, every row accounted for.

    A row the check pass found bad was reported then; any other row ends with
    a result: sent or failed, skipped as a repeat (``dedupe``), bad if it no
    longer renders, or ``pending`` if the file changed before it was read.
    """

    def __init__(self, job: _Job, checked: CheckedRows | None, dedupe: bool) -> None:
        self.job = job
        self.checked = checked
        self.dedupe = dedupe
        self.lines: dict[int, int] = {}  # message index -> row line, while in flight
        self._indexes = itertools.count()
        self._found: deque[_Outcome] = deque()  # rows settled while reading
        self._handled = 0  # rows read, in order
        self._changed: RecipientsChangedError | None = None

    def _message(self, position: int, row: Recipient | InvalidRow) -> Message | None:
        self._handled = position
        checked = self.checked
        if checked is not None and checked.is_invalid(position):
            return None  # reported by the check pass
        if isinstance(row, InvalidRow):
            self._found.append(_Outcome(-1, row.line, row))  # no check pass
            return None
        if checked is not None and self.dedupe and checked.is_repeat(position):
            self._found.append(
                _Outcome(-1, row.line, DuplicateRow(row.line, row.email))
            )
            return None
        try:
            message = self.job.render(row)
        except MailerError as exc:
            # Even a row that passed the check pass and no longer renders (a
            # file it names was removed since) gets its line in the report.
            self._found.append(_Outcome(-1, row.line, InvalidRow(row.line, str(exc))))
            return None
        self.lines[next(self._indexes)] = row.line
        return message

    def messages(
        self, recipients: RecipientSource
    ) -> Iterator[Message] | AsyncIterator[Message]:
        """Return the messages to send, read from ``recipients`` as they are needed."""
        if isinstance(recipients, AsyncIterable):
            return self._from_async(recipients)
        return self._from_sync(recipients)

    async def _from_async(
        self, rows: AsyncIterable[RecipientRow]
    ) -> AsyncIterator[Message]:
        position = 0
        async for raw in rows:
            position += 1
            message = self._message(position, _row(raw, position))
            if message is not None:
                yield message

    def _from_sync(self, rows: Iterable[RecipientRow]) -> Iterator[Message]:
        # A plain generator: the engine pulls it inline, no task per message.
        numbered = (
            self.checked.replay(_rows(rows))
            if self.checked is not None
            else enumerate(_rows(rows), start=1)
        )
        try:
            for position, row in numbered:
                message = self._message(position, row)
                if message is not None:
                    yield message
        except RecipientsChangedError as exc:
            self._changed = exc  # no further message: the rest end pending

    def drain(self) -> Iterator[_Outcome]:
        """Yield the rows settled while reading (bad, repeated)."""
        while self._found:
            yield self._found.popleft()

    def unread(self) -> Iterator[_Outcome]:
        """Yield ``pending`` for each checked row not read because the file changed."""
        if self._changed is None or self.checked is None:
            return
        reason = f"not sent: {self._changed}"
        checked = self.checked
        for position in range(self._handled + 1, len(checked) + 1):
            line = checked.line(position)
            if checked.is_invalid(position):
                continue  # reported by the check pass
            if self.dedupe and checked.is_repeat(position):
                yield _Outcome(-1, line, DuplicateRow(line, ""))
                continue
            result = SendResult.of(
                SendStatus.PENDING,
                to=(),
                message_id=None,
                recipients={},
                refused={},
                error=reason,
                transient=True,
            )
            yield _Outcome(1 << 62, line, result)


async def stream_messages(
    template_name: str,
    recipients: RecipientSource,
    *,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
    settings: MailerSettings | None = None,
    skip_invalid: bool = False,
    journal: Path | str | None = None,
    stop: asyncio.Event | None = None,
    on_resume: Callable[[ResumeCounts], None] | None = None,
    dedupe: bool = False,
    on_checked: Callable[[CheckSummary], None] | None = None,
) -> AsyncIterator[tuple[int, SendResult | InvalidRow]]:
    """Render and send like ``send_messages``, yielding each outcome as it is known.

    Rows are read and rendered only as connections free up, and nothing is
    kept once yielded. A batch that may be refused as a whole (``skip_invalid``
    off) is checked first, which reads the rows twice; a one-shot source (an
    iterator or an async iterable) is then collected into a list. The check
    pass keeps 13 bytes per row (its line and fingerprint) and one set entry
    per distinct address (about 80 bytes); the send pass compares each row
    with the one checked, and stops at the first that differs: the file
    changed, and the rows not sent end ``pending``. With ``skip_invalid`` (and
    no ``journal`` nor ``dedupe``) every source is read once, and bad rows are
    yielded as they are met.

    Args:
        template_name: The template set to render.
        recipients: Rows (``Recipient`` objects or mappings with an ``email``
            key), from any iterable or async iterable.
        context: Variables shared by every row (a row's own values win).
        sender: The From address; default ``MAILER_FROM``.
        settings: Default ``MailerSettings()``.
        skip_invalid: Send the valid rows and yield the bad ones, instead of
            refusing the whole batch.
        journal: Record every message's state in this SQLite file. If it
            exists, resume the batch it holds: what was sent is not sent again
            (see ``mailer.bulk.resume``); what an earlier run finished is yielded
            first. It must be the journal of this template and these rows.
        stop: Set it to stop the batch: no new message starts, attempts in
            flight get ``MAILER_SHUTDOWN_GRACE`` seconds, the rest end
            ``pending`` (and stay pending in the journal).
        on_resume: Called, when ``journal`` exists, with what it held.
        dedupe: Send once per address: a row whose address (compared
            ignoring case) an earlier row has is not sent, and is yielded as a
            DuplicateRow.
        on_checked: Called after the check pass with what it found, repeated
            addresses included.

    Yields:
        ``(line, outcome)``: the row's line number (its 1-based position for
        sources other than files) and a SendResult, an InvalidRow for a row
        that was skipped, or a DuplicateRow for a repeat ``dedupe`` skipped.
        Results come in completion order.

    Raises:
        InvalidRecipientsError: Some rows are bad and ``skip_invalid`` is off;
            nothing was sent.
        JournalError: ``journal`` belongs to another batch or is in use.
        ConfigError: No sender is known.
        TemplateError: The template set is missing or does not parse.
    """
    async for outcome in _outcomes(
        template_name,
        recipients,
        context=context,
        sender=sender,
        settings=settings,
        skip_invalid=skip_invalid,
        journal=journal,
        stop=stop,
        on_resume=on_resume,
        dedupe=dedupe,
        on_checked=on_checked,
    ):
        yield outcome.line, outcome.result


async def send_messages(
    template_name: str,
    recipients: RecipientSource,
    *,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
    settings: MailerSettings | None = None,
    skip_invalid: bool = False,
    on_result: Callable[[SendResult], None] | None = None,
    keep_results: bool = True,
    journal: Path | str | None = None,
    stop: asyncio.Event | None = None,
    dedupe: bool = False,
) -> BatchReport:
    """Render ``template_name`` for each recipient and send the messages concurrently.

    Every row is rendered and validated first, in a pass that keeps a few
    bytes per row (its line and fingerprint, see ``stream_messages``); only
    then is anything sent. Rows are read again for sending, each compared with
    the one checked, so a re-iterable source (a list, a RecipientFile) is
    never held in memory; a one-shot iterator or async iterable is first
    collected into a list, unless ``skip_invalid`` is on and there is neither
    ``journal`` nor ``dedupe`` (then rows are read once).

    Args:
        template_name: The template set to render.
        recipients: Rows: ``Recipient`` objects or mappings with an ``email``
            key (and ``name``, and any template variables).
        context: Variables shared by every row (a row's own values win).
        sender: The From address; default ``MAILER_FROM``.
        settings: Default ``MailerSettings()``.
        skip_invalid: Send the valid rows and report the bad ones, instead of
            refusing the whole batch.
        on_result: Called with each result as it completes (for progress).
        keep_results: Keep every result in the report (turn off for huge batches
            whose results go to ``on_result``).
        journal: Record every message's state in this SQLite file. If it
            exists, resume the batch it holds: what was sent is not sent again
            (see ``mailer.bulk.resume``). It must be the journal of this template
            and these recipients.
        stop: Set it to stop the batch: no new message starts, attempts in
            flight get ``MAILER_SHUTDOWN_GRACE`` seconds, the rest end
            ``pending`` (and stay pending in the journal).
        dedupe: Send once per address (compared ignoring case): later rows
            with an address already met are skipped, counted in
            ``duplicates``.

    Returns:
        The report: counts, per-message results (in input order, every
        message of a journal's batch included) and skipped rows; ``resumed``
        says what a resumed journal held, ``checked`` what the check pass
        found (repeated addresses included).

    Raises:
        InvalidRecipientsError: Some rows are bad and ``skip_invalid`` is off;
            nothing was sent.
        JournalError: ``journal`` belongs to another batch or is in use.
        ConfigError: No sender is known.
        TemplateError: The template set is missing or does not parse.
    """
    report = BatchReport()
    kept: list[tuple[int, SendResult]] = []

    def resumed(counts: ResumeCounts) -> None:
        report.resumed = counts

    def checked(summary: CheckSummary) -> None:
        report.checked = summary

    async for outcome in _outcomes(
        template_name,
        recipients,
        context=context,
        sender=sender,
        settings=settings,
        skip_invalid=skip_invalid,
        journal=journal,
        stop=stop,
        on_resume=resumed,
        dedupe=dedupe,
        on_checked=checked,
    ):
        if isinstance(outcome.result, DuplicateRow):
            report.add_duplicate(outcome.result)
            continue
        if isinstance(outcome.result, InvalidRow):
            report.add_invalid(outcome.result)
            continue
        report.add(outcome.result, keep=False)
        if keep_results:
            kept.append((outcome.position, outcome.result))
        if on_result is not None:
            on_result(outcome.result)
    kept.sort(key=lambda pair: pair[0])
    report.results = [result for _, result in kept]
    return report
