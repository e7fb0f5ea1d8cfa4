"""Run ``mailer send``: a template batch (progress, report, journal), or one message."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mailer.bulk.attachments import RowAttachments
from mailer.bulk.identity import CheckSummary
from mailer.bulk.recipients import DuplicateRow, InvalidRow, Recipient, RecipientFile
from mailer.bulk.report import BatchReport, ResumeCounts
from mailer.bulk.sending import check_recipients, stream_messages
from mailer.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    AttachColumnOption,
    AttachmentsDirOption,
    AttachOption,
    DedupeOption,
    EnvFileOption,
    JournalOption,
    OptionalRecipientsOption,
    OptionalTemplateOption,
    TemplatesDirOption,
    describe_attachments,
    err,
    fail,
    load_settings,
    open_recipients,
    print_bad_rows,
    row_attachments,
    run_command,
    settings_note,
)
from mailer.cli.dialogue import VerboseOption, showing_dialogue
from mailer.cli.logs import LogFormat, configured_logging
from mailer.cli.oneshot import send_one
from mailer.cli.shutdown import Shutdown
from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.delivery.results import SendResult, SendStatus
from mailer.exceptions import InvalidRecipientsError

SHOWN_FAILURES = 20


def send(
    template: OptionalTemplateOption = None,
    recipients: OptionalRecipientsOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and check; send nothing.")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", metavar="FILE", help="Write a JSON Lines report here."
        ),
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="Send the valid rows and list the others; exit 0 if every valid "
            "row was sent.",
        ),
    ] = False,
    templates_dir: TemplatesDirOption = None,
    journal: JournalOption = None,
    attach: AttachOption = None,
    attach_column: AttachColumnOption = None,
    attachments_dir: AttachmentsDirOption = None,
    dedupe: DedupeOption = False,
    env_file: EnvFileOption = None,
    verbose: VerboseOption = False,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="ADDR",
            help="Send one message to ADDR instead of a template batch (with "
            "--subject and --text): to check a configuration.",
        ),
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option("--subject", metavar="TEXT", help="With --to: the subject."),
    ] = None,
    text: Annotated[
        str | None,
        typer.Option("--text", metavar="TEXT", help="With --to: the plain-text body."),
    ] = None,
    html: Annotated[
        str | None,
        typer.Option("--html", metavar="HTML", help="With --to: an HTML body too."),
    ] = None,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="Enqueue the batch (MAILER_QUEUE_DSN) for `mailer worker` "
            "instead of sending it; prints the batch id.",
        ),
    ] = False,
    job_size: Annotated[
        int | None,
        typer.Option(
            "--job-size",
            min=1,
            max=10_000,
            help="With --queue: messages per job; default MAILER_QUEUE_JOB_SIZE.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            max=64,
            metavar="N",
            help="Processes that render and sign the batch before it is sent: 0 "
            "= one per core for a batch over 256 rows, 1 = this process only; "
            "default MAILER_WORKERS (0).",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            help="json: one JSON line per message outcome (and every other "
            "log record) on stderr, instead of the failure lines.",
        ),
    ] = LogFormat.TEXT,
) -> None:
    """Send TEMPLATE to every recipient in the file, concurrently.

    Or, with --to, send one message written on the command line.
    """
    if to is not None or subject is not None or text is not None or html is not None:
        _refuse_with_one_message(
            template, recipients, journal, skip_invalid, dry_run, dedupe
        )
        if to is None or subject is None or text is None:
            missing = [
                name
                for name, value in (
                    ("--to", to),
                    ("--subject", subject),
                    ("--text", text),
                )
                if value is None
            ]
            raise fail(
                f"one message needs --to, --subject and --text: missing "
                f"{', '.join(missing)}"
            )
        settings = load_settings(templates_dir, env_file, announce=verbose)
        writer = _open_report(report)
        with showing_dialogue(verbose), configured_logging(log_format):
            code = run_command(send_one(settings, to, subject, text, html, writer))
        raise typer.Exit(code)
    if template is None or recipients is None:
        option = "--template/-t" if template is None else "--recipients/-r"
        raise fail(
            f"missing {option} (or --to ADDR --subject S --text T for one message)"
        )
    settings = load_settings(templates_dir, env_file, announce=verbose)
    if workers is not None:
        settings = settings.model_copy(update={"workers": workers})
    source = open_recipients(recipients)
    files = row_attachments(attach, attach_column, attachments_dir)
    if queue and not dry_run:
        from mailer.cli.enqueue import enqueue

        raise typer.Exit(
            enqueue(
                template,
                source,
                settings,
                skip_invalid,
                report,
                journal,
                job_size,
                files,
            )
        )
    if dry_run:
        raise typer.Exit(
            run_command(
                _dry_run(template, source, settings, skip_invalid, files, dedupe)
            )
        )
    # Opened before anything is sent: a report that cannot be written stops
    # the command here, not after the first messages went out.
    writer = _open_report(report)
    with showing_dialogue(verbose), configured_logging(log_format):
        code = run_command(
            _send(
                template,
                source,
                settings,
                skip_invalid,
                writer,
                journal,
                files,
                show_progress=not verbose,  # -v lines and a bar would mix
                quiet_failures=log_format is LogFormat.JSON,
                dedupe=dedupe,
            )
        )
    raise typer.Exit(code)


def _refuse_with_one_message(
    template: str | None,
    recipients: Path | None,
    journal: Path | None,
    skip_invalid: bool,
    dry_run: bool,
    dedupe: bool = False,
) -> None:
    given = [
        name
        for name, value in (
            ("--template", template),
            ("--recipients", recipients),
            ("--journal", journal),
            ("--skip-invalid", skip_invalid),
            ("--dry-run", dry_run),
            ("--dedupe", dedupe),
        )
        if value
    ]
    if given:
        raise fail(f"--to sends one message: {given[0]} is for a template batch")


async def _dry_run(
    template: str,
    source: RecipientFile,
    settings: MailerSettings,
    skip_invalid: bool,
    attachments: RowAttachments | None = None,
    dedupe: bool = False,
) -> int:
    listed: dict[str, int] = {}

    def show(row: Recipient, message: Message) -> None:
        # One line per distinct set of files: not 10,000 identical lines.
        if not message.attachments:
            return
        files = describe_attachments(message.attachments)
        if files not in listed:
            listed[files] = row.line
            print(f"line {row.line}: attachments: {files}")

    checked, errors = check_recipients(
        template, source, settings=settings, attachments=attachments, on_valid=show
    )
    if errors and not skip_invalid:
        raise InvalidRecipientsError(errors)
    print_bad_rows(errors)
    repeats = checked.describe_repeats(dedupe=dedupe)
    if repeats:
        err.print(f"note: {repeats}", markup=False)
    would_send = checked.valid - (checked.repeated if dedupe else 0)
    repeated = (
        f", {checked.repeated} repeating an earlier address" if checked.repeated else ""
    )
    print(
        f"dry run: {would_send} message(s) would be sent, {len(errors)} invalid "
        f"row(s){repeated}; nothing was sent"
    )
    return EXIT_OK


class _CountColumn(ProgressColumn):
    """Messages done of the batch's total; nothing while the rows are checked."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)}")


class _RateColumn(ProgressColumn):
    """Messages per second, as a progress bar column."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f}/s")


async def _send(
    template: str,
    source: RecipientFile,
    settings: MailerSettings,
    skip_invalid: bool,
    report: ReportWriter,
    journal: Path | None = None,
    attachments: RowAttachments | None = None,
    *,
    show_progress: bool = True,
    quiet_failures: bool = False,
    dedupe: bool = False,
) -> int:
    started = time.perf_counter()
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        _CountColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not (show_progress and err.is_terminal),
    )
    task = progress.add_task("checking", total=None)
    checked = False

    def counted(summary: CheckSummary) -> None:
        nonlocal checked
        checked = True
        repeats = summary.describe_repeats(dedupe=dedupe)
        if repeats:
            err.print(f"note: {repeats}", markup=False)  # before sending
        to_send = summary.valid - (summary.repeated if dedupe else 0)
        progress.update(task, description="sending", total=to_send)

    def first_signal(name: str) -> None:
        if not checked:
            err.print(f"{name}: stopping the check pass; nothing was sent")
            return
        err.print(
            f"{name}: stopping; no new message starts, those in flight get up to "
            f"{settings.shutdown_grace:g}s (press Ctrl-C again to quit at once)"
        )

    def second_signal(name: str) -> None:
        err.print(
            f"{name} again: quitting now"
            + (
                f"; the journal {journal} is consistent: run the same command to resume"
                if journal is not None
                else ""
            )
        )

    def resumed(counts: ResumeCounts) -> None:
        print(counts.describe())  # before sending: what the journal held

    shutdown = Shutdown(on_first=first_signal, on_second=second_signal)
    batch = BatchReport()
    failures: list[SendResult] = []
    first_pending: SendResult | None = None
    with progress, report, shutdown.installed():
        outcomes = stream_messages(
            template,
            source,
            settings=settings,
            skip_invalid=skip_invalid,
            journal=journal,
            stop=shutdown.stop,
            on_resume=resumed,
            attachments=attachments,
            on_checked=counted,
            dedupe=dedupe,
        )
        # aclosing: whatever happens in this loop, the stream is closed here,
        # in this task, so its connections and tasks end with it (an
        # unclosed generator was finalised later, or never: a hang).
        async with contextlib.aclosing(outcomes):
            async for line, outcome in outcomes:
                if isinstance(outcome, DuplicateRow):
                    batch.add_duplicate(outcome)
                    report.write(
                        {"line": line, "status": "duplicate", "to": outcome.email}
                    )
                    continue
                if isinstance(outcome, InvalidRow):
                    batch.add_invalid(outcome)
                    continue
                # Written as it arrives (in completion order, with its line)
                # and then dropped: memory stays flat whatever the batch size.
                batch.add(outcome, keep=False)
                if not report.write({"line": line, **outcome.to_report()}):
                    # The report cannot hold this result: stop the batch
                    # (what is in flight ends, the rest stays pending).
                    shutdown.stop.set_reason(
                        f"stopped: the report {report.path} cannot be written"
                    )
                # With --log-format json each outcome is a JSON line already.
                failed = outcome.status is SendStatus.FAILED and not quiet_failures
                if failed and len(failures) < SHOWN_FAILURES:
                    failures.append(outcome)
                pending = outcome.status is SendStatus.PENDING and not quiet_failures
                if pending and first_pending is None:
                    first_pending = outcome
                if not progress.disable:  # no terminal: skip its bookkeeping
                    progress.advance(task)
        for row in batch.invalid_rows:
            report.write({"line": row.line, "status": "invalid", "error": row.error})
    elapsed = time.perf_counter() - started
    if not checked and shutdown.exit_code is not None:
        err.print(
            f"stopped during the check pass, after {elapsed:.2f}s: nothing was sent"
        )
        return shutdown.exit_code
    _print_outcome(
        batch,
        failures,
        first_pending,
        elapsed,
        stopped_itself=shutdown.exit_code is None and report.error is None,
    )
    if report.error is not None:
        err.print(
            f"error: the report {report.path} could not be written: {report.error}; "
            "the batch was stopped (the summary above counts every message"
            + (f", and the journal {journal} is consistent" if journal else "")
            + ")",
            markup=False,
        )
    elif report.path is not None:
        print(f"report written to {report.path}")
    if shutdown.exit_code is not None:
        if journal is not None:
            print(f"stopped: run the same command to resume from {journal}")
        return shutdown.exit_code
    if batch.pending or report.error is not None:
        # No signal stopped it: an error every message would hit did (a
        # refused login, an unreachable server, a report that cannot be
        # written), and the lines above say which setting or file to fix.
        return EXIT_USAGE
    if batch.failed or (batch.invalid and not skip_invalid):
        return EXIT_FAILED
    return EXIT_OK


def _open_report(path: Path | None) -> ReportWriter:
    """Open the report file now, or fail with one line (exit 2) saying why."""
    writer = ReportWriter(path)
    try:
        writer.open()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = ""
        if isinstance(exc, FileNotFoundError):
            hint = " (does the folder exist?)"
        raise fail(f"--report {path}: cannot write there: {reason}{hint}") from None
    return writer


class ReportWriter:
    """A JSON Lines report, opened before the batch starts (nothing if no path).

    A write that fails (a full disk) is remembered, not raised: the batch is
    then stopped and the failure said once, after the summary.

    Args:
        path: The report file, or ``None`` for no report.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.error: str | None = None
        self._handle: TextIO | None = None

    def open(self) -> None:
        """Create (or empty) the file.

        Raises:
            OSError: It cannot be written (a missing folder, a directory...).
        """
        if self.path is not None:
            # Line-buffered: each result is on disk as soon as it is known.
            self._handle = self.path.open("w", encoding="utf-8", buffering=1)

    def write(self, line: dict[str, Any]) -> bool:
        """Append one line; return False once the file cannot take it."""
        if self._handle is None or self.error is not None:
            return self.error is None
        try:
            self._handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        except OSError as exc:
            self.error = exc.strerror or str(exc)
            return False
        return True

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError as exc:  # the last buffered bytes did not fit
                self.error = self.error or exc.strerror or str(exc)


def _print_outcome(
    batch: BatchReport,
    failures: list[SendResult],
    first_pending: SendResult | None,
    elapsed: float,
    *,
    stopped_itself: bool,
) -> None:
    print_bad_rows(batch.invalid_rows, verb="skipped ")
    for result in failures:
        err.print(f"failed {', '.join(result.to)}: {result.error}", markup=False)
    if failures and batch.failed > len(failures):
        err.print(
            f"... and {batch.failed - len(failures)} more failures (see --report)"
        )
    if first_pending is not None:
        # One line: they share the reason the batch stopped.
        note = settings_note() if stopped_itself else ""
        err.print(f"{batch.pending} pending: {first_pending.error}{note}", markup=False)
    print(f"{batch.summary()} in {elapsed:.2f}s")
    if batch.ambiguous:
        print(
            f"{batch.ambiguous} ambiguous: an attempt ended after the message "
            "content was sent and before the server's reply, so it may have "
            "been delivered twice (every copy has the same Message-ID)"
        )
