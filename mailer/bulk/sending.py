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

from mailer.bulk.recipients import (
    InvalidRow,
    Recipient,
    RecipientFile,
    recipient_from_mapping,
)
from mailer.bulk.report import BatchReport, ResumeCounts
from mailer.bulk.resume import rows_digest, stream_with_journal
from mailer.config.settings import MailerSettings
from mailer.content.addresses import Address
from mailer.content.message import Message
from mailer.delivery.client import generate_message_client
from mailer.delivery.results import SendResult
from mailer.exceptions import ConfigError, InvalidRecipientsError, MailerError
from mailer.templates.sets import TemplateSet, load_template_set, render_set

RecipientRow = Recipient | InvalidRow | Mapping[str, Any]
RecipientSource = Iterable[RecipientRow] | AsyncIterable[RecipientRow]


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
    job = _Job(
        template_name,
        load_template_set(template_name, settings.templates_dir),
        settings,
        context,
        sender,
    )
    checked = _check(job, recipients)
    return checked.valid, checked.errors


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
    valid: int
    errors: list[InvalidRow]
    digest: str  # of every row, so a journal notices another (or edited) file


def _check(job: _Job, recipients: Iterable[RecipientRow]) -> _Checked:
    """Render every row once, keeping nothing but the count, the errors, a digest."""
    valid = 0
    errors: list[InvalidRow] = []

    def checked_rows() -> Iterator[Recipient | InvalidRow]:
        nonlocal valid
        for row in _rows(recipients):
            yield row
            if isinstance(row, InvalidRow):
                errors.append(row)
                continue
            try:
                job.render(row)
            except MailerError as exc:
                errors.append(InvalidRow(row.line, str(exc)))
            else:
                valid += 1

    # One pass: each row is digested as it is checked, and nothing is kept.
    digest = rows_digest(checked_rows())
    return _Checked(valid, errors, digest)


@dataclass(frozen=True, slots=True)
class _Outcome:
    position: int  # order in the source, for reports kept in input order
    line: int
    result: SendResult | InvalidRow


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
    templates_dir: Path | str | None = None,
) -> AsyncIterator[_Outcome]:
    settings = settings if settings is not None else MailerSettings()
    job = _Job(
        template_name,
        load_template_set(
            template_name,
            settings.templates_dir if templates_dir is None else Path(templates_dir),
        ),
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
    # sent, which reads the rows twice, and a journal reads them again. A
    # one-shot source is then collected first; with skip_invalid and no
    # journal, there is nothing to refuse, so it streams once.
    if _is_one_shot(recipients) and (journal is not None or not skip_invalid):
        recipients = await _collect(recipients)
    check_first = not _is_one_shot(recipients)
    digest = ""
    if check_first:
        assert isinstance(recipients, Iterable)  # noqa: S101 - collected above
        checked = _check(job, recipients)
        if checked.errors and not skip_invalid:
            raise InvalidRecipientsError(checked.errors)
        for position, error in enumerate(checked.errors):
            yield _Outcome(-1 - position, error.line, error)
        digest = checked.digest

    if journal is not None:
        assert isinstance(recipients, Iterable)  # noqa: S101 - collected above
        rows = recipients
        journaled = stream_with_journal(
            journal,
            template_name=template_name,
            source_label=_source_label(rows),
            fingerprint=digest,
            rows=lambda: enumerate(_rows(rows), start=1),
            render=job.render,
            client_factory=generate_message_client,
            settings=settings,
            stop=stop,
            on_resume=on_resume,
        )
        async for position, line, result in journaled:
            yield _Outcome(position, line, result)
        return

    lines: dict[int, int] = {}  # message index -> row line, while in flight
    indexes = itertools.count()
    found: deque[InvalidRow] = deque()  # bad rows met while sending (single pass)

    def render_or_record(row: Recipient | InvalidRow) -> Message | None:
        if isinstance(row, InvalidRow):
            if not check_first:
                found.append(row)
            return None
        try:
            message = job.render(row)
        except MailerError as exc:
            if not check_first:
                found.append(InvalidRow(row.line, str(exc)))
            return None  # when checked first, already reported
        lines[next(indexes)] = row.line
        return message

    async def from_async(rows: AsyncIterable[RecipientRow]) -> AsyncIterator[Message]:
        position = 0
        async for raw in rows:
            position += 1
            message = render_or_record(_row(raw, position))
            if message is not None:
                yield message

    def from_sync(rows: Iterable[RecipientRow]) -> Iterator[Message]:
        # A plain generator: the engine pulls it inline, no task per message.
        for row in _rows(rows):
            message = render_or_record(row)
            if message is not None:
                yield message

    messages: Iterator[Message] | AsyncIterator[Message] = (
        from_async(recipients)
        if isinstance(recipients, AsyncIterable)
        else from_sync(recipients)
    )
    async with generate_message_client(settings) as client:
        async for index, result in client.stream(messages, stop=stop):
            while found:
                bad = found.popleft()
                yield _Outcome(-1, bad.line, bad)
            yield _Outcome(index, lines.pop(index), result)
    for bad in found:
        yield _Outcome(-1, bad.line, bad)


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
    templates_dir: Path | str | None = None,
) -> AsyncIterator[tuple[int, SendResult | InvalidRow]]:
    """Render and send like ``send_messages``, yielding each outcome as it is known.

    Memory stays flat whatever the number of rows: rows are read and rendered
    only as connections free up, and nothing is kept once yielded. A batch
    that may be refused as a whole (``skip_invalid`` off) is checked first,
    which reads the rows twice; a one-shot source (an iterator or an async
    iterable) is then collected into a list. With ``skip_invalid`` (and no
    ``journal``) every source is read once, and bad rows are yielded as they
    are met.

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
        templates_dir: Where the template sets are; default
            ``settings.templates_dir`` (``MAILER_TEMPLATES_DIR``).

    Yields:
        ``(line, outcome)``: the row's line number (its 1-based position for
        sources other than files) and a SendResult, or an InvalidRow for a
        row that was skipped. Results come in completion order.

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
        templates_dir=templates_dir,
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
    templates_dir: Path | str | None = None,
) -> BatchReport:
    """Render ``template_name`` for each recipient and send the messages concurrently.

    Every row is rendered and validated first, in a pass that keeps nothing in
    memory; only then is anything sent. Rows are read again for sending, so a
    re-iterable source (a list, a RecipientFile) keeps memory flat; a one-shot
    iterator or async iterable is first collected into a list, unless
    ``skip_invalid`` is on and there is no ``journal`` (then rows are read
    once, see ``stream_messages``).

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
        templates_dir: Where the template sets are; default
            ``settings.templates_dir`` (``MAILER_TEMPLATES_DIR``).

    Returns:
        The report: counts, per-message results (in input order, every
        message of a journal's batch included) and skipped rows; ``resumed``
        says what a resumed journal held.

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
        templates_dir=templates_dir,
    ):
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
