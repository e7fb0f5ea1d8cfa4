"""Run the ``mailer`` command line: send, status, preview, demo, inbox.

Exit codes: 0 every message was sent; 1 some were not; 2 usage or configuration
errors (one line on stderr, no traceback); 130 interrupted (SIGINT), 143
stopped (SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from mailer.bulk.recipients import InvalidRow, Recipient, RecipientFile
from mailer.bulk.report import BatchReport, ResumeCounts
from mailer.bulk.sending import check_rows, render_row, send_messages, stream_messages
from mailer.bulk.status import journal_status
from mailer.cli.shutdown import Shutdown
from mailer.config.settings import MailerSettings
from mailer.content.addresses import Address
from mailer.delivery.results import SendResult, SendStatus
from mailer.exceptions import InvalidRecipientsError, MailerError
from mailer.inbox.server import start_inbox
from mailer.records import SentMail

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Send templated email over SMTP, preview it, or run a local inbox.",
)
# soft_wrap: an error is one line, whatever the terminal width.
err = Console(stderr=True, highlight=False, soft_wrap=True)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SHOWN_FAILURES = 20
PREVIEW_SENDER = Address.parse("preview@example.test", field="sender")


def main() -> None:
    """Run the command line."""
    app()


def _fail(message: str) -> typer.Exit:
    err.print(f"error: {message}", markup=False)
    return typer.Exit(EXIT_USAGE)


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coroutine)
    except InvalidRecipientsError as exc:
        for row in exc.rows:
            err.print(f"line {row.line}: {row.error}", markup=False)
        raise _fail(str(exc)) from None
    except MailerError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED


def _settings(templates_dir: Path | None) -> MailerSettings:
    try:
        if templates_dir is not None:
            return MailerSettings(templates_dir=templates_dir)
        return MailerSettings()
    except MailerError as exc:
        raise _fail(str(exc)) from None


def _recipients(path: Path) -> RecipientFile:
    try:
        return RecipientFile(path)
    except InvalidRecipientsError as exc:
        raise _fail(exc.rows[0].error) from None


TemplateOption = Annotated[
    str, typer.Option("--template", "-t", help="Template set name (a folder).")
]
RecipientsOption = Annotated[
    Path, typer.Option("--recipients", "-r", help="A .csv or .jsonl file.")
]
TemplatesDirOption = Annotated[
    Path | None,
    typer.Option("--templates-dir", help="Overrides MAILER_TEMPLATES_DIR."),
]
JournalOption = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        help="Record each message's state in this SQLite file; run the same "
        "command again to resume (what was sent is not sent again).",
    ),
]


@app.command()
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
) -> None:
    """Send TEMPLATE to every recipient in the file, concurrently."""
    settings = _settings(templates_dir)
    source = _recipients(recipients)
    if dry_run:
        raise typer.Exit(_run(_dry_run(template, source, settings, skip_invalid)))
    raise typer.Exit(
        _run(_send(template, source, settings, skip_invalid, report, journal))
    )


async def _dry_run(
    template: str, source: RecipientFile, settings: MailerSettings, skip_invalid: bool
) -> int:
    valid, errors = check_rows(template, source, settings=settings)
    if errors and not skip_invalid:
        raise InvalidRecipientsError(errors)
    for row in errors:
        err.print(f"line {row.line}: {row.error}", markup=False)
    print(
        f"dry run: {valid} message(s) would be sent, {len(errors)} invalid row(s); "
        "nothing was sent"
    )
    return EXIT_OK


async def _send(
    template: str,
    source: RecipientFile,
    settings: MailerSettings,
    skip_invalid: bool,
    report_path: Path | None,
    journal: Path | None = None,
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
        )
        async for line, outcome in outcomes:
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


@app.command()
def status(
    journal: Annotated[
        Path, typer.Option("--journal", help="The journal of a `mailer send` run.")
    ],
) -> None:
    """Print a journal's counts by state and list its failed messages."""
    try:
        state = journal_status(journal)
    except MailerError as exc:
        raise _fail(str(exc)) from None
    for line in state.lines():
        print(line)
    raise typer.Exit(EXIT_OK if state.is_complete else EXIT_FAILED)


@app.command()
def preview(
    template: TemplateOption,
    recipients: RecipientsOption,
    line: Annotated[
        int | None, typer.Option("--line", help="Preview the row on this line.")
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Print the whole MIME message.")
    ] = False,
    templates_dir: TemplatesDirOption = None,
) -> None:
    """Render TEMPLATE for one recipient (the first, or --line) and print it."""
    settings = _settings(templates_dir)
    source = _recipients(recipients)
    for row in source:
        if isinstance(row, Recipient) and (line is None or row.line == line):
            break
    else:
        where = f" on line {line}" if line is not None else ""
        raise _fail(f"no recipient row{where} in {recipients}")
    try:
        message = render_row(template, row, settings=settings)
        sender = message.sender or settings.default_sender or PREVIEW_SENDER
        content = message.to_bytes(sender)
    except MailerError as exc:
        raise _fail(f"line {row.line}: {exc}") from None
    if raw:
        sys.stdout.write(content.decode("utf-8").replace("\r\n", "\n"))
        return
    mail = SentMail(envelope=message.envelope(sender), raw=content)
    for header in ("From", "To", "Cc", "Reply-To", "Subject"):
        value = mail.message.get(header)
        if value is not None:
            print(f"{header}: {value}")
    if message.bcc:
        print(f"Bcc (envelope only): {', '.join(mail.bcc)}")
    print()
    _print_block(mail.text or "")
    if mail.html is not None:
        print("--- HTML ---")
        _print_block(mail.html)


def _print_block(text: str) -> None:
    print(text, end="" if text.endswith("\n") else "\n")


@app.command()
def demo(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to save the .eml files.")
    ] = None,
) -> None:
    """Send the example template through a local SMTP inbox; needs no configuration."""
    raise typer.Exit(_run(_demo(directory)))


def _examples() -> Path:
    packaged = Path(__file__).resolve().parents[1] / "_examples"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "examples"


async def _demo(directory: Path | None) -> int:
    examples = _examples()
    folder = directory or Path(tempfile.mkdtemp(prefix="mailer-demo-"))
    async with await start_inbox(directory=folder) as inbox:
        print(f"local SMTP inbox listening on {inbox.host}:{inbox.port}")
        settings = MailerSettings(
            _env_file=None,
            smtp_host=inbox.host,
            smtp_port=inbox.port,
            smtp_tls="none",
            from_="Mailer Demo <demo@example.test>",
            templates_dir=examples / "templates",
        )
        batch = await send_messages(
            "welcome", RecipientFile(examples / "recipients.csv"), settings=settings
        )
        arrived = list(inbox.messages)
    print(
        f"sent {batch.sent} of {batch.total} messages over SMTP ({batch.failed} failed)"
    )
    print(f"the inbox received {len(arrived)} message(s):")
    for mail in arrived:
        parts = "text + html" if mail.html is not None else "text"
        print(f"  {', '.join(mail.envelope.rcpt_tos)}: {mail.subject!r} ({parts})")
    print(f"saved as .eml files in {folder}")
    every_one_arrived = batch.ok and len(arrived) == batch.total
    print(
        "every example message arrived"
        if every_one_arrived
        else "SOME MESSAGES ARE MISSING"
    )
    return EXIT_OK if every_one_arrived else EXIT_FAILED


@app.command()
def inbox(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 1025,
    host: Annotated[
        str, typer.Option(help="Loopback address to listen on.")
    ] = "127.0.0.1",
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to save each message as .eml.")
    ] = Path("mailer-inbox"),
) -> None:
    """Run a local SMTP inbox for development (loopback only) until Ctrl-C."""
    raise typer.Exit(_run(_serve(host, port, directory)))


async def _serve(host: str, port: int, directory: Path) -> int:
    def show(mail: SentMail, path: Path | None) -> None:
        print(
            f"{mail.envelope.mail_from} -> {', '.join(mail.envelope.rcpt_tos)}: "
            f"{mail.subject!r} ({len(mail.raw)} bytes) saved to {path}",
            flush=True,
        )

    try:
        server = await start_inbox(
            host=host, port=port, directory=directory, on_message=show
        )
    except (OSError, ValueError) as exc:
        raise MailerError(f"cannot listen on {host}:{port}: {exc}") from None
    # Our own handlers, not KeyboardInterrupt: SIGTERM (a service manager, a
    # container stop) ends it as cleanly as Ctrl-C, and so does a SIGINT sent
    # to an inbox started in the background (where SIGINT starts ignored).
    shutdown = Shutdown()
    async with server:
        with shutdown.installed():
            print(
                f"inbox listening on {server.host}:{server.port}, saving to "
                f"{directory} (Ctrl-C to stop)",
                flush=True,
            )
            await shutdown.stop.wait()
    print(f"inbox stopped; {len(server.messages)} message(s) received", flush=True)
    return shutdown.exit_code if shutdown.exit_code is not None else EXIT_OK
