"""Run ``mailer send``: a templated batch with progress, report and journal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from mailer.bulk.identity import CheckSummary
from mailer.bulk.recipients import DuplicateRow, InvalidRow, RecipientFile
from mailer.bulk.report import BatchReport, ResumeCounts
from mailer.bulk.sending import check_recipients, stream_messages
from mailer.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    DedupeOption,
    JournalOption,
    RecipientsOption,
    TemplateOption,
    TemplatesDirOption,
    err,
    load_settings,
    open_recipients,
    run_command,
)
from mailer.cli.shutdown import Shutdown
from mailer.config.settings import MailerSettings
from mailer.delivery.results import SendResult, SendStatus
from mailer.exceptions import InvalidRecipientsError

SHOWN_FAILURES = 20


def send(
    template: TemplateOption,
    recipients: RecipientsOption,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and check; send nothing.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a JSON Lines report here.")
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Send the valid rows, report the others."),
    ] = False,
    templates_dir: TemplatesDirOption = None,
    journal: JournalOption = None,
    dedupe: DedupeOption = False,
) -> None:
    """Send TEMPLATE to every recipient in the file, concurrently."""
    settings = load_settings(templates_dir)
    source = open_recipients(recipients)
    if dry_run:
        raise typer.Exit(
            run_command(_dry_run(template, source, settings, skip_invalid, dedupe))
        )
    raise typer.Exit(
        run_command(
            _send(template, source, settings, skip_invalid, report, journal, dedupe)
        )
    )


async def _dry_run(
    template: str,
    source: RecipientFile,
    settings: MailerSettings,
    skip_invalid: bool,
    dedupe: bool = False,
) -> int:
    checked, errors = check_recipients(template, source, settings=settings)
    if errors and not skip_invalid:
        raise InvalidRecipientsError(errors)
    for row in errors:
        err.print(f"line {row.line}: {row.error}", markup=False)
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


async def _send(
    template: str,
    source: RecipientFile,
    settings: MailerSettings,
    skip_invalid: bool,
    report_path: Path | None,
    journal: Path | None = None,
    dedupe: bool = False,
) -> int:
    started = time.perf_counter()
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task("sending", total=None)

    def first_signal(name: str) -> None:
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

    def checked(summary: CheckSummary) -> None:
        repeats = summary.describe_repeats(dedupe=dedupe)
        if repeats:
            err.print(f"note: {repeats}", markup=False)  # before sending

    shutdown = Shutdown(on_first=first_signal, on_second=second_signal)
    report = _ReportWriter(report_path)
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
            dedupe=dedupe,
            on_checked=checked,
        )
        async for line, outcome in outcomes:
            if isinstance(outcome, DuplicateRow):
                batch.add_duplicate(outcome)
                report.write({"line": line, "status": "duplicate", "to": outcome.email})
                continue
            if isinstance(outcome, InvalidRow):
                batch.add_invalid(outcome)
                continue
            # Written as it arrives (in completion order, with its line) and
            # then dropped: memory stays flat whatever the batch size.
            batch.add(outcome, keep=False)
            report.write({"line": line, **outcome.to_report()})
            if outcome.status is SendStatus.FAILED and len(failures) < SHOWN_FAILURES:
                failures.append(outcome)
            if outcome.status is SendStatus.PENDING and first_pending is None:
                first_pending = outcome
            progress.advance(task)
        for row in batch.invalid_rows:
            report.write({"line": row.line, "status": "invalid", "error": row.error})
    elapsed = time.perf_counter() - started
    _print_outcome(batch, failures, first_pending, elapsed)
    if report_path is not None:
        print(f"report written to {report_path}")
    if shutdown.exit_code is not None:
        if journal is not None:
            print(f"stopped: run the same command to resume from {journal}")
        return shutdown.exit_code
    return EXIT_OK if batch.ok else EXIT_FAILED


class _ReportWriter:
    """A JSON Lines report, opened at the first line (no file if none is asked)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle: TextIO | None = None

    def write(self, line: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self._handle is None:
            # Line-buffered: each result is on disk as soon as it is known.
            self._handle = self.path.open("w", encoding="utf-8", buffering=1)
        self._handle.write(json.dumps(line, ensure_ascii=False) + "\n")

    def __enter__(self) -> _ReportWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.close()
        elif self.path is not None and exc_info[0] is None:
            self.path.write_text("", encoding="utf-8")  # an empty batch


def _print_outcome(
    batch: BatchReport,
    failures: list[SendResult],
    first_pending: SendResult | None,
    elapsed: float,
) -> None:
    for row in batch.invalid_rows:
        err.print(f"skipped line {row.line}: {row.error}", markup=False)
    for result in failures:
        err.print(f"failed {', '.join(result.to)}: {result.error}", markup=False)
    if batch.failed > len(failures):
        err.print(
            f"... and {batch.failed - len(failures)} more failures (see --report)"
        )
    if first_pending is not None:
        # One line: they share the reason the batch stopped.
        err.print(f"{batch.pending} pending: {first_pending.error}", markup=False)
    print(f"{batch.summary()} in {elapsed:.2f}s")
    if batch.ambiguous:
        print(
            f"{batch.ambiguous} ambiguous: an attempt ended after the message "
            "content was sent and before the server's reply, so it may have "
            "been delivered twice (every copy has the same Message-ID)"
        )
