"""Assemble the ``mailer`` command line: send, status, preview, demo, inbox."""

from __future__ import annotations

import platform
import sys
from typing import Annotated

import typer

from mailer import __version__
from mailer.cli import demo, dkim, inbox, preview, send, status
from mailer.cli import queue as queue_commands
from mailer.cli import worker as worker_command
from mailer.cli.common import SOURCE, QuietWhenGone

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help, as people know it from other tools: "-t, --template NAME",
    # no <bool>/<str> type placeholders.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Send templated email over SMTP, preview it, or run a local inbox.",
)
app.command(short_help="Send a template to every row of a file, or one message.")(
    send.send
)
app.command(
    short_help="Show what a journal, a queued batch or the queue says about it."
)(status.status)
app.command(short_help="Print one rendered message; send nothing.")(preview.preview)
app.command(short_help="Send the examples through an inbox of its own.")(demo.demo)
app.command(short_help="Run a local SMTP inbox for development.")(inbox.inbox)
app.add_typer(
    dkim.app, name="dkim", short_help="Make a DKIM key pair and its DNS record."
)
app.command(short_help="Deliver queued mail until SIGTERM or Ctrl-C.")(
    worker_command.worker
)
app.add_typer(
    queue_commands.queue_app,
    name="queue",
    short_help="Create or migrate the mail queue's tables in PostgreSQL.",
)


def _print_version(value: bool) -> None:
    if value:
        print(f"mailer {__version__} (aiomailer, Python {platform.python_version()})")
        raise typer.Exit


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Send templated email over SMTP, preview it, or run a local inbox."""
    SOURCE.description = ""  # said only by commands that read the settings


def main() -> None:
    """Run the command line."""
    # A reader that goes away (`mailer send ... | head -1`, a closed terminal)
    # must not change what the command does or the code it exits with.
    sys.stdout = QuietWhenGone(sys.stdout)
    sys.stderr = QuietWhenGone(sys.stderr)
    app()
