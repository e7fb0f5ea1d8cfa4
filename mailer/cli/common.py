"""Share what every command needs: the error console, exit codes, options, helpers.

Exit codes: 0 every message was sent; 1 some were not; 2 usage or configuration
errors (one line on stderr, no traceback); 130 interrupted (SIGINT), 143
stopped (SIGTERM).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mailer.bulk.recipients import RecipientFile
from mailer.config.settings import MailerSettings
from mailer.exceptions import (
    InvalidRecipientsError,
    MailerError,
    RecipientsFileError,
)

# soft_wrap: an error is one line, whatever the terminal width.
err = Console(stderr=True, highlight=False, soft_wrap=True)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on one line and return the usage exit (2)."""
    err.print(f"error: {message}", markup=False)
    return typer.Exit(EXIT_USAGE)


def run_command(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; a MailerError becomes one line and exit 2."""
    try:
        return asyncio.run(coroutine)
    except InvalidRecipientsError as exc:
        for row in exc.rows:
            err.print(f"line {row.line}: {row.error}", markup=False)
        raise fail(str(exc)) from None
    except MailerError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED


def load_settings(templates_dir: Path | None) -> MailerSettings:
    """Return the settings, or fail with the one-line error naming the key."""
    try:
        if templates_dir is not None:
            return MailerSettings(templates_dir=templates_dir)
        return MailerSettings()
    except MailerError as exc:
        raise fail(str(exc)) from None


def open_recipients(path: Path) -> RecipientFile:
    """Open a recipients file, or fail with one line saying why not."""
    try:
        return RecipientFile(path)
    except InvalidRecipientsError as exc:
        raise fail(exc.rows[0].error) from None
    except RecipientsFileError as exc:
        raise fail(str(exc)) from None


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
DedupeOption = Annotated[
    bool,
    typer.Option(
        "--dedupe",
        help="Send once per address: a row whose address (ignoring case) an "
        "earlier row has is skipped and listed, not sent.",
    ),
]
