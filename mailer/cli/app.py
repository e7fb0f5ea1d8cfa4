"""Assemble the ``mailer`` command line: send, status, preview, demo, inbox."""

from __future__ import annotations

import typer

from mailer.cli import demo, inbox, preview, send, status
from mailer.cli import queue as queue_commands
from mailer.cli import worker as worker_command

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Send templated email over SMTP, preview it, or run a local inbox.",
)
app.command()(send.send)
app.command()(status.status)
app.command()(preview.preview)
app.command()(demo.demo)
app.command()(inbox.inbox)
app.command()(worker_command.worker)
app.add_typer(queue_commands.queue_app, name="queue")


def main() -> None:
    """Run the command line."""
    app()
