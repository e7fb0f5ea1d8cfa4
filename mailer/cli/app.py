"""Assemble the ``mailer`` command line: send, status, preview, demo, inbox."""

from __future__ import annotations

import typer

from mailer.cli import demo, dkim, inbox, preview, send, status

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
app.add_typer(dkim.app, name="dkim")


def main() -> None:
    """Run the command line."""
    app()
