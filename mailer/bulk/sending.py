"""Render a template for many recipients and send the messages: send_messages().

Tests replace the client by patching ``mailer.bulk.sending.generate_message_client``,
the name this module looks up.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
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
from mailer.bulk.checkpass import (
    Checked,
    CheckInterruptedError,
    check_rows_in_order,
)
from mailer.bulk.identity import CheckedRows, CheckSummary, FileWatch
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
from mailer.bulk.senders import SenderRun, sender_count
from mailer.bulk.spool import CHUNK_ROWS, Spool
from mailer.bulk.spooled import SpoolSend, check_into_spool
from mailer.bulk.workers import WorkerPool, has_more_than, worker_count
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
    RecipientsChangedError,
)
from mailer.templates.sets import TemplateSet, load_template_set, render_set

RecipientRow = Recipient | InvalidRow | Mapping[str, Any]
# Recipients columns with a meaning beyond the templates.
LOCALE_KEY = "locale"
UNSUBSCRIBE_KEY = "unsubscribe_url"
RecipientSource = Iterable[RecipientRow] | AsyncIterable[RecipientRow]
Outcome = SendResult | InvalidRow  # a DuplicateRow is an InvalidRow
# The factory as defined: when a test patches the name above, the batch takes
# the path tests have always seen (every row rendered again to be sent).
_FACTORY = generate_message_client


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


def check_recipients(
    template_name: str,
    recipients: Iterable[RecipientRow],
    *,
    settings: MailerSettings,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
    attachments: RowAttachments | None = None,
    on_valid: Callable[[Recipient, Message], None] | None = None,
) -> tuple[CheckSummary, list[InvalidRow]]:
    """Render and validate every row, and count the repeated addresses.

    Args:
        template_name: The template set.
        recipients: The rows.
        settings: For the templates directory.
        context: Variables shared by every row.
        sender: The From address.
        attachments: The files of each row (missing files are bad rows).
        on_valid: Called with each valid row and its message.

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
        attachments,
    )
    checked = _check(job, recipients, on_valid)
    return checked.rows.summary(), checked.errors


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


def _check(
    job: _Job,
    recipients: Iterable[RecipientRow],
    on_valid: Callable[[Recipient, Message], None] | None = None,
    stop: asyncio.Event | None = None,
) -> Checked:
    """Render every row once, keeping its line and fingerprint, and the errors.

    Raises:
        CheckInterruptedError: ``stop`` was set meanwhile (read between rows,
            so that a long check ends within one row of a Ctrl-C).
    """
    return check_rows_in_order(
        job.render,
        enumerate(_rows(recipients), start=1),
        CheckedRows(_source_label(recipients)),
        columns=getattr(recipients, "columns", None),  # a CSV file's header
        stop=stop,
        on_valid=None if on_valid is None else lambda _, row, m: on_valid(row, m),
    )


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
    hooks: Hooks | None = None,
    attachments: RowAttachments | None = None,
    on_checked: Callable[[CheckSummary], None] | None = None,
    templates_dir: Path | str | None = None,
    dedupe: bool = False,
) -> AsyncIterator[_Outcome]:
    settings = settings if settings is not None else MailerSettings()
    if journal is not None:
        check_journal_path(journal)  # before the check pass, which may be long

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
    # sent, which reads the rows twice, and a journal reads them again; so
    # does dedupe, which must know every address first. A one-shot source is
    # then collected first; with skip_invalid and neither, there is nothing to
    # refuse, so it streams once.
    if _is_one_shot(recipients) and (journal is not None or not skip_invalid or dedupe):
        recipients = await _collect(recipients)
    if _is_one_shot(recipients):
        once = _stream_once(job, recipients, settings, client_factory, stop)
        async for outcome in once:
            yield outcome
        return
    assert isinstance(recipients, Iterable)  # noqa: S101 - collected above
    client: MessageClient | None = None
    spool: Spool | None = None
    try:
        if generate_message_client is _FACTORY:
            # Made before the check pass: whether it sends prepared messages
            # as they are decides whether the check pass prepares them.
            client = client_factory(settings)
            if client.accepts_prepared:
                spool = _new_spool()
        try:
            if spool is not None and client is not None:
                try:
                    found = await _check_into_spool(
                        job, recipients, spool, client, settings, stop
                    )
                except OSError as exc:
                    if exc.filename is not None and not str(exc.filename).startswith(
                        str(spool.path)
                    ):
                        raise  # not the spool's (the recipients file's, say)
                    raise _spool_error(spool.path.parent, exc) from None
            else:
                # In a worker thread: the event loop stays free to handle
                # signals, so Ctrl-C stops a long check pass.
                found = await asyncio.to_thread(_check, job, recipients, None, stop)
        except CheckInterruptedError:
            # Stopped before anything was sent or journaled: the batch ends
            # here, with nothing to report (listing every row as pending cost
            # as long as the check itself on a large file).
            return
        if found.errors and not skip_invalid:
            raise InvalidRecipientsError(found.errors)
        checked = found.rows
        # Changed while it was being checked: nothing is sent (the rows read
        # may mix both versions).
        checked.check_unchanged()
        if on_checked is not None:
            on_checked(checked.summary())
        for position, error in enumerate(found.errors):
            yield _Outcome(-1 - position, error.line, error)

        made = client if client is not None else client_factory(settings)
        client = None  # each path below closes it
        if journal is not None:
            rows = recipients
            journaled = stream_with_journal(
                journal,
                template_name=template_name,
                checked=checked,
                rows=lambda: _rows(rows),
                spool=spool,
                render=job.render,
                client_factory=lambda _: made,
                settings=settings,
                dedupe=dedupe,
                stop=stop,
                on_resume=on_resume,
            )
            async for position, line, result in journaled:
                yield _Outcome(position, line, result)
            return
        if spool is not None:
            async for outcome in _send_spooled(job, checked, spool, made, dedupe, stop):
                yield outcome
            return
        plain = _PlainRun(job, checked, dedupe, stop)
        async for outcome in plain.send(made, recipients):
            yield outcome
    finally:
        if client is not None:
            await client.aclose()  # made, but the batch ended before sending
        if spool is not None:
            spool.close()


def _new_spool() -> Spool:
    """Make the batch's spool folder, or say in one line why it cannot be.

    Raises:
        ConfigError: The temporary folder cannot be written (``TMPDIR``).
    """
    try:
        return Spool()
    except OSError as exc:
        raise _spool_error(Path(tempfile.gettempdir()), exc) from None


def _spool_error(folder: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"TMPDIR: the batch's spool in {folder} cannot be written "
        f"({exc.strerror or exc}); nothing was sent: free some space there or "
        "set TMPDIR to another folder",
        key="TMPDIR",
    )


async def _check_into_spool(
    job: _Job,
    recipients: Iterable[RecipientRow],
    spool: Spool,
    client: MessageClient,
    settings: MailerSettings,
    stop: asyncio.Event | None,
) -> Checked:
    """Run the check pass into the spool: in worker processes for a large batch.

    Raises:
        CheckInterruptedError: ``stop`` was set meanwhile.
    """
    checked = CheckedRows(_source_label(recipients))
    path = getattr(recipients, "path", None)
    if isinstance(path, Path):
        # Before the first read: the send pass sends from the spool, and
        # stops if the file changes meanwhile (CheckedRows.check_unchanged).
        checked.watch = FileWatch(path)
    columns = getattr(recipients, "columns", None)
    rows: Iterator[tuple[int, Recipient | InvalidRow]] = enumerate(
        _rows(recipients), start=1
    )
    workers = worker_count(settings.workers)
    pool: WorkerPool | None = None
    if workers > 1:
        # A batch of one chunk or less is checked here: forking costs more.
        head, more = has_more_than(rows, CHUNK_ROWS)
        rows = itertools.chain(head, rows)
        if more:
            # Forked from this thread (the event loop's), before the check.
            pool = WorkerPool(workers, job, client.preparer, columns)
    if pool is None:
        return await asyncio.to_thread(
            check_into_spool,
            job,
            rows,
            checked,
            spool,
            client.preparer,
            columns=columns,
            stop=stop,
        )
    try:
        return await asyncio.to_thread(pool.check, rows, checked, spool, stop=stop)
    finally:
        # In a thread too: the busy workers finish their chunk first.
        await asyncio.to_thread(pool.close)


async def _send_spooled(
    job: _Job,
    checked: CheckedRows,
    spool: Spool,
    client: MessageClient,
    dedupe: bool,
    stop: asyncio.Event | None,
) -> AsyncIterator[_Outcome]:
    """Send the checked batch from its spool: nothing is rendered again."""
    count = sender_count(client, spool)
    if count > 1:
        # Sender processes, each with its own client: this one only gathers.
        await client.aclose()
        run_in = SenderRun(count, client, job, checked, spool, dedupe=dedupe, stop=stop)
        async for position, line, outcome in run_in.outcomes():
            yield _Outcome(position, line, outcome)
        return
    run = SpoolSend(job, checked, spool, dedupe=dedupe, stop=stop)
    async with client:
        async for index, result in client.stream(run.messages(), stop=stop):
            for position, line, outcome in run.drain():
                yield _Outcome(position, line, outcome)
            position, line = run.lines.pop(index)
            yield _Outcome(position, line, result)
    for position, line, outcome in run.drain():
        yield _Outcome(position, line, outcome)
    async for position, line, outcome in run.rest():
        yield _Outcome(position, line, outcome)


async def _stream_once(
    job: _Job,
    recipients: RecipientSource,
    settings: MailerSettings,
    client_factory: Callable[[MailerSettings], MessageClient],
    stop: asyncio.Event | None,
) -> AsyncIterator[_Outcome]:
    """Send a one-shot source read once, unchecked (skip_invalid, no journal)."""
    plain = _PlainRun(job, None, False, stop)
    async for outcome in plain.send(client_factory(settings), recipients):
        yield outcome


class _PlainRun:
    """The send pass without a journal: rows to messages, every row accounted for.

    A row the check pass found bad was reported then; any other row ends with
    a result: sent or failed, skipped as a repeat (``dedupe``), bad if it no
    longer renders, or ``pending``: the batch was stopped before it was taken
    (it is not rendered then), or the file changed before it was read.
    """

    def __init__(
        self,
        job: _Job,
        checked: CheckedRows | None,
        dedupe: bool,
        stop: asyncio.Event | None,
    ) -> None:
        self.job = job
        self.checked = checked
        self.dedupe = dedupe
        self.stop = stop
        self.lines: dict[int, int] = {}  # message index -> row line, while in flight
        self._indexes = itertools.count()
        self._found: deque[_Outcome] = deque()  # rows settled while reading
        self._handled = 0  # rows read, in order
        self._changed: RecipientsChangedError | None = None
        self._rest_sync: Iterator[tuple[int, Recipient | InvalidRow]] | None = None
        self._rest_async: AsyncIterator[RecipientRow] | None = None

    async def send(
        self, client: MessageClient, recipients: RecipientSource
    ) -> AsyncIterator[_Outcome]:
        """Send the rows through ``client`` (closed at the end); yield every outcome."""
        async with client:
            async for index, result in client.stream(
                self.messages(recipients), stop=self.stop
            ):
                for outcome in self.drain():
                    yield outcome
                yield _Outcome(index, self.lines.pop(index), result)
        for outcome in self.drain():
            yield outcome
        async for outcome in self.rest():
            yield outcome

    def _halted(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _message(self, position: int, row: Recipient | InvalidRow) -> Message | None:
        self._handled = position
        checked = self.checked
        if checked is not None and checked.is_invalid(position):
            return None  # reported by the check pass
        if isinstance(row, InvalidRow):
            self._found.append(_Outcome(-1, row.line, row))  # no check pass
            return None
        if checked is not None and self.dedupe and checked.is_repeat(position):
            skipped = DuplicateRow(row.line, row.email)
            self._found.append(_Outcome(-1, row.line, skipped))
            return None
        try:
            message = self.job.render(row)
        except MailerError as exc:
            # Even a row that passed the check pass and no longer renders (a
            # file it names was removed since) gets its line in the report.
            bad = InvalidRow(row.line, str(exc))
            self._found.append(_Outcome(-1, row.line, bad))
            return None
        self.lines[next(self._indexes)] = row.line
        return message

    def messages(
        self, recipients: RecipientSource
    ) -> Iterator[Message] | AsyncIterator[Message]:
        """Return the messages to send, read from ``recipients`` as they are needed."""
        if isinstance(recipients, AsyncIterable):
            self._rest_async = aiter(recipients)
            return self._from_async(self._rest_async)
        self._rest_sync = (
            self.checked.replay(_rows(recipients))
            if self.checked is not None
            else enumerate(_rows(recipients), start=1)
        )
        return self._from_sync(self._rest_sync)

    async def _from_async(
        self, rows: AsyncIterator[RecipientRow]
    ) -> AsyncIterator[Message]:
        async for raw in rows:
            position = self._handled + 1
            message = self._message(position, _row(raw, position))
            if message is not None:
                yield message
            if self._halted():
                return  # the rest is pending, and is not rendered (rest())

    def _from_sync(
        self, rows: Iterator[tuple[int, Recipient | InvalidRow]]
    ) -> Iterator[Message]:
        # A plain generator: the engine pulls it inline, no task per message.
        try:
            for position, row in rows:
                message = self._message(position, row)
                if message is not None:
                    yield message
                if self._halted():
                    return  # the rest is pending, and is not rendered (rest())
        except RecipientsChangedError as exc:
            self._changed = exc  # no further message: the rest end pending

    def drain(self) -> Iterator[_Outcome]:
        """Yield the rows settled while reading (bad, repeated)."""
        while self._found:
            yield self._found.popleft()

    async def rest(self) -> AsyncIterator[_Outcome]:
        """Yield ``pending`` for every row the batch did not take.

        After a stop, the rows are read (not rendered) for their address;
        after a change of the file, the checked rows' lines are all that is
        trustworthy.
        """
        if self._changed is None and self._halted():
            reason = f"not sent: {getattr(self.stop, 'reason', 'interrupted')}"
            left = 0
            try:
                while (taken := await self._next_rest()) is not None:
                    left += 1
                    if left % 1000 == 0:
                        await asyncio.sleep(0)  # a second Ctrl-C is heard meanwhile
                    outcome = self._not_taken(*taken, reason)
                    if outcome is not None:
                        yield outcome
            except RecipientsChangedError as exc:
                self._changed = exc
        if self._changed is not None:
            for outcome in self._unread(f"not sent: {self._changed}"):
                yield outcome

    async def _next_rest(self) -> tuple[int, Recipient | InvalidRow] | None:
        if self._rest_sync is not None:
            return next(self._rest_sync, None)
        if self._rest_async is not None:
            raw = await anext(self._rest_async, None)
            if raw is None:
                return None
            return self._handled + 1, _row(raw, self._handled + 1)
        return None

    def _not_taken(
        self, position: int, row: Recipient | InvalidRow, reason: str
    ) -> _Outcome | None:
        """Return the outcome of a row a stopped batch never took, if it has one."""
        self._handled = position
        checked = self.checked
        if checked is not None and checked.is_invalid(position):
            return None  # reported by the check pass
        if isinstance(row, InvalidRow):
            return _Outcome(-1, row.line, row)
        if checked is not None and self.dedupe and checked.is_repeat(position):
            return _Outcome(-1, row.line, DuplicateRow(row.line, row.email))
        return _Outcome(next(self._indexes), row.line, _pending((row.email,), reason))

    def _unread(self, reason: str) -> Iterator[_Outcome]:
        """Yield ``pending`` for each checked row not read: the file changed."""
        checked = self.checked
        if checked is None:
            return
        for position in range(self._handled + 1, len(checked) + 1):
            line = checked.line(position)
            if checked.is_invalid(position):
                continue  # reported by the check pass
            if self.dedupe and checked.is_repeat(position):
                yield _Outcome(-1, line, DuplicateRow(line, ""))
                continue
            yield _Outcome(next(self._indexes), line, _pending((), reason))


def _pending(to: tuple[str, ...], reason: str) -> SendResult:
    return SendResult.of(
        SendStatus.PENDING,
        to=to,
        message_id=None,
        recipients={},
        refused={},
        error=reason,
        transient=True,
    )


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
    on_checked: Callable[[CheckSummary], None] | None = None,
    templates_dir: Path | str | None = None,
    dedupe: bool = False,
) -> AsyncGenerator[tuple[int, SendResult | InvalidRow], None]:
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
            ``pending`` (and stay pending in the journal). Set during the
            check pass, it ends the batch at the next row, before anything
            is sent or journaled: nothing more is yielded.
        on_resume: Called, when ``journal`` exists, with what it held.
        hooks: Hooks to run around each send, after those the settings name
            (see ``mailer.delivery.hooks``).
        attachments: Files for every message and per row (see
            ``RowAttachments``); a row naming a missing file is bad.
        on_checked: Called, once the check pass is over, with what it found:
            the valid rows (the messages the batch will send, but for repeats
            under ``dedupe``: a progress bar's total), the bad rows and the
            repeated addresses.
        templates_dir: Where the template sets are; default
            ``settings.templates_dir`` (``MAILER_TEMPLATES_DIR``).
        dedupe: Send once per address: a row whose address (compared
            ignoring case) an earlier row has is not sent, and is yielded as a
            DuplicateRow.

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
        attachments=attachments,
        on_checked=on_checked,
        hooks=hooks,
        templates_dir=templates_dir,
        dedupe=dedupe,
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
        hooks=hooks,
        attachments=attachments,
        templates_dir=templates_dir,
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
