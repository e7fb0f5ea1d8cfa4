"""Render a template for many recipients and send the messages: send_messages().

Tests replace the client by patching ``mailer.bulk.sending.generate_message_client``,
the name this module looks up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import (
    AsyncGenerator,
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

from mailer.bulk.attachments import RowAttachments, check_attachments_size
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
from mailer.delivery.client import MessageClient, generate_message_client
from mailer.delivery.hooks import Hooks
from mailer.delivery.results import SendResult, SendStatus
from mailer.exceptions import (
    ConfigError,
    InvalidRecipientsError,
    MailerError,
    UndefinedVariableError,
)
from mailer.templates.sets import TemplateSet, load_template_set, render_set

RecipientRow = Recipient | InvalidRow | Mapping[str, Any]
# Recipients columns with a meaning beyond the templates.
LOCALE_KEY = "locale"
UNSUBSCRIBE_KEY = "unsubscribe_url"
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
    attachments: RowAttachments | None = None,
) -> Message:
    """Render the template for one recipient (shared context under the row's own).

    A ``locale`` column picks the set's ``NAME/<locale>/`` folder when it
    has one; an ``unsubscribe_url`` column adds the one-click unsubscribe
    headers.

    Args:
        template_name: The template set.
        recipient: The row.
        settings: For the templates directory.
        context: Variables shared by every row.
        sender: The From address.
        templates: The set, already loaded (a batch loads it once).
        attachments: The files every message carries, and the column naming
            each row's own.

    Raises:
        MailerError: The row does not render into a valid message.
    """
    values = {**(context or {}), **recipient.context}
    to: str | Address = recipient.email
    if recipient.name:
        to = Address.create(recipient.email, recipient.name, field="to")
    locale = values.get(LOCALE_KEY)
    if locale:
        # Cached per (set, locale): a batch compiles each locale once.
        root = templates.root if templates is not None else settings.templates_dir
        templates = load_template_set(template_name, root, locale=str(locale))
    elif templates is None:
        templates = load_template_set(template_name, settings.templates_dir)
    unsubscribe = values.get(UNSUBSCRIBE_KEY) or None
    files = attachments.for_row(recipient) if attachments else ()
    if files:
        check_attachments_size(files, settings)
    return render_set(
        templates,
        to=to,
        context=values,
        sender=sender,
        attachments=files,
        unsubscribe=unsubscribe,
    )


def check_rows(
    template_name: str,
    recipients: Iterable[RecipientRow],
    *,
    settings: MailerSettings,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
    attachments: RowAttachments | None = None,
    on_valid: Callable[[Recipient, Message], None] | None = None,
) -> tuple[int, list[InvalidRow]]:
    """Render and validate every row without keeping the messages.

    Args:
        template_name: The template set.
        recipients: The rows.
        settings: For the templates directory.
        context: Variables shared by every row.
        sender: The From address.
        attachments: The files of each row (missing files are bad rows).
        on_valid: Called with each valid row and its message (a dry run
            lists what would be sent).

    Returns:
        How many rows are valid, and every bad row with its line number.
    """
    job = _Job(
        template_name,
        load_template_set(template_name, settings.templates_dir),
        settings,
        context,
        sender,
        attachments,
    )
    checked = _check(job, recipients, on_valid)
    return checked.valid, checked.errors


@dataclass(frozen=True, slots=True)
class _Job:
    """What every row of one batch is rendered with (the template set loaded once)."""

    template_name: str
    templates: TemplateSet
    settings: MailerSettings
    context: Mapping[str, Any] | None
    sender: str | None
    attachments: RowAttachments | None = None

    def render(self, row: Recipient) -> Message:
        return render_row(
            self.template_name,
            row,
            settings=self.settings,
            context=self.context,
            sender=self.sender,
            templates=self.templates,
            attachments=self.attachments,
        )


@dataclass(slots=True)
class _Checked:
    valid: int
    errors: list[InvalidRow]
    digest: str  # of every row, so a journal notices another (or edited) file


class _CheckInterruptedError(Exception):
    """The check pass saw ``stop`` set: nothing has been sent."""


def _check(
    job: _Job,
    recipients: Iterable[RecipientRow],
    on_valid: Callable[[Recipient, Message], None] | None = None,
    stop: asyncio.Event | None = None,
) -> _Checked:
    """Render every row once, keeping nothing but the count, the errors, a digest.

    Raises:
        _CheckInterruptedError: ``stop`` was set meanwhile (read between rows,
            so that a long check ends within one row of a Ctrl-C).
    """
    valid = 0
    errors: list[InvalidRow] = []
    columns = getattr(recipients, "columns", None)  # a CSV file's header

    def checked_rows() -> Iterator[Recipient | InvalidRow]:
        nonlocal valid
        for row in _rows(recipients):
            if stop is not None and stop.is_set():
                raise _CheckInterruptedError
            yield row
            if isinstance(row, InvalidRow):
                errors.append(row)
                continue
            try:
                message = job.render(row)
            except UndefinedVariableError as exc:
                errors.append(InvalidRow(row.line, _missing_value(exc, columns)))
            except MailerError as exc:
                errors.append(InvalidRow(row.line, str(exc)))
            else:
                valid += 1
                if on_valid is not None:
                    on_valid(row, message)

    # One pass: each row is digested as it is checked, and nothing is kept.
    digest = rows_digest(checked_rows())
    return _Checked(valid, errors, digest)


def _missing_value(
    error: UndefinedVariableError, columns: tuple[str, ...] | None
) -> str:
    """Say why a row lacks a variable its template uses, in the file's terms.

    For a CSV file, a name missing from the header is the same mistake on every
    row, said the same way (so it can be said once): the column is missing.
    A name in the header lacks a value on this row only: its cell is empty.
    """
    variable = error.variable
    if columns is None or not variable.isidentifier():
        return str(error)
    used_by = error.template.split("/", 1)[-1]
    if variable not in columns:
        return f"column {variable!r} is used by {used_by} but is not in the header"
    return (
        f"column {variable!r} is empty on this row, and {used_by} uses it (write "
        f'{{{{ {variable} | default("...") }}}} in the template to allow it)'
    )


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
    hooks: Hooks | None = None,
    attachments: RowAttachments | None = None,
    on_checked: Callable[[int], None] | None = None,
    templates_dir: Path | str | None = None,
) -> AsyncIterator[_Outcome]:
    settings = settings if settings is not None else MailerSettings()

    def client_factory(settings: MailerSettings) -> MessageClient:
        # Looked up at call time: tests patch mailer.bulk.sending's name.
        client = generate_message_client(settings)
        if hooks is not None:
            client.hooks.extend(hooks)
        return client

    job = _Job(
        template_name,
        load_template_set(
            template_name,
            settings.templates_dir if templates_dir is None else Path(templates_dir),
        ),
        settings,
        context,
        sender,
        attachments,
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
        try:
            # In a worker thread: the event loop stays free to handle signals,
            # so Ctrl-C stops a long check pass (it used to wait for its end).
            checked = await asyncio.to_thread(_check, job, recipients, None, stop)
        except _CheckInterruptedError:
            # Stopped before anything was sent or journaled: the batch ends
            # here, with nothing to report (listing every row as pending cost
            # as long as the check itself on a large file).
            return
        if checked.errors and not skip_invalid:
            raise InvalidRecipientsError(checked.errors)
        if on_checked is not None:
            on_checked(checked.valid)
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
            client_factory=client_factory,
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

    def halted() -> bool:
        return stop is not None and stop.is_set()

    async def from_async(rows: AsyncIterator[RecipientRow]) -> AsyncIterator[Message]:
        nonlocal position
        async for raw in rows:
            position += 1
            message = render_or_record(_row(raw, position))
            if message is not None:
                yield message
            if halted():
                return  # the rest is pending, and is not rendered (below)

    def from_sync(rows: Iterator[Recipient | InvalidRow]) -> Iterator[Message]:
        # A plain generator: the engine pulls it inline, no task per message.
        for row in rows:
            message = render_or_record(row)
            if message is not None:
                yield message
            if halted():
                return  # the rest is pending, and is not rendered (below)

    position = 0
    rest_async: AsyncIterator[RecipientRow] | None = None
    rest_sync: Iterator[Recipient | InvalidRow] | None = None
    messages: Iterator[Message] | AsyncIterator[Message]
    if isinstance(recipients, AsyncIterable):
        rest_async = aiter(recipients)
        messages = from_async(rest_async)
    else:
        rest_sync = _rows(recipients)
        messages = from_sync(rest_sync)
    async with client_factory(settings) as client:
        async for index, result in client.stream(messages, stop=stop):
            while found:
                bad = found.popleft()
                yield _Outcome(-1, bad.line, bad)
            yield _Outcome(index, lines.pop(index), result)
    for bad in found:
        yield _Outcome(-1, bad.line, bad)
    if not halted():
        return
    # Stopped: every row not yet taken is pending. Rendering each one only to
    # say it was not sent took as long as sending on a large file.
    reason = f"not sent: {getattr(stop, 'reason', 'interrupted')}"
    left = 0
    if rest_sync is not None:
        for row in rest_sync:
            left += 1
            if left % 1000 == 0:
                await asyncio.sleep(0)  # a second Ctrl-C is heard meanwhile
            outcome = _not_taken(row, next(indexes), reason, check_first)
            if outcome is not None:
                yield outcome
    elif rest_async is not None:
        async for raw in rest_async:
            position += 1
            outcome = _not_taken(
                _row(raw, position), next(indexes), reason, check_first
            )
            if outcome is not None:
                yield outcome


def _not_taken(
    row: Recipient | InvalidRow, index: int, reason: str, checked: bool
) -> _Outcome | None:
    """Return the outcome of a row a stopped batch never took, if it has one."""
    if isinstance(row, InvalidRow):
        return None if checked else _Outcome(-1, row.line, row)
    result = SendResult.of(
        SendStatus.PENDING,
        to=(row.email,),
        message_id=None,
        recipients={},
        refused={},
        error=reason,
        transient=True,
    )
    return _Outcome(index, row.line, result)


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
    hooks: Hooks | None = None,
    attachments: RowAttachments | None = None,
    on_checked: Callable[[int], None] | None = None,
    templates_dir: Path | str | None = None,
) -> AsyncGenerator[tuple[int, SendResult | InvalidRow], None]:
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
            ``pending`` (and stay pending in the journal). Set during the
            check pass, it ends the batch at the next row, before anything
            is sent or journaled: nothing more is yielded.
        on_resume: Called, when ``journal`` exists, with what it held.
        hooks: Hooks to run around each send, after those the settings name
            (see ``mailer.delivery.hooks``).
        attachments: Files for every message and per row (see
            ``RowAttachments``); a row naming a missing file is bad.
        on_checked: Called, once the check pass is over, with the number of
            valid rows: the messages the batch will yield (for a progress
            bar's total).
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
        attachments=attachments,
        on_checked=on_checked,
        hooks=hooks,
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
    hooks: Hooks | None = None,
    attachments: RowAttachments | None = None,
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
            ``pending`` (and stay pending in the journal). Set during the
            check pass, it ends the batch before anything is sent: the report
            is empty.
        attachments: Files for every message and per row (see
            ``RowAttachments``); a row naming a missing file is bad.
        hooks: Hooks to run around each send, after those the settings name:
            a before_send hook may change or refuse each message, an
            after_send hook sees each result (see ``mailer.delivery.hooks``).
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
        hooks=hooks,
        attachments=attachments,
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
