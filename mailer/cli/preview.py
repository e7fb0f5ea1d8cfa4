"""Run ``mailer preview``: render one row and print it, or serve every set's preview."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailer.bulk.recipients import Recipient
from mailer.bulk.sending import render_row
from mailer.cli.common import (
    TemplatesDirOption,
    fail,
    load_settings,
    open_recipients,
)
from mailer.content.addresses import Address
from mailer.exceptions import MailerError
from mailer.records import SentMail

PREVIEW_SENDER = Address.parse("preview@example.test", field="sender")


def preview(
    template: Annotated[
        str | None,
        typer.Option("--template", "-t", help="Template set name (a folder)."),
    ] = None,
    recipients: Annotated[
        Path | None,
        typer.Option(
            "--recipients",
            "-r",
            help="A .csv or .jsonl file (with --serve: sample data for every set).",
        ),
    ] = None,
    line: Annotated[
        int | None, typer.Option("--line", help="Preview the row on this line.")
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Print the whole MIME message.")
    ] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Serve every template set's preview on a web page that reloads "
            "when a file changes.",
        ),
    ] = False,
    http_port: Annotated[
        int, typer.Option(help="With --serve: the web page's port (0: any free).")
    ] = 8025,
    templates_dir: TemplatesDirOption = None,
) -> None:
    """Render TEMPLATE for one recipient (the first, or --line) and print it.

    With --serve, show every template set in the browser instead.
    """
    settings = load_settings(templates_dir)
    if serve:
        from mailer.cli.previews import serve_previews

        serve_previews(settings.templates_dir, recipients, http_port)
        return
    if template is None or recipients is None:
        raise fail("give --template and --recipients (or --serve for the web page)")
    source = open_recipients(recipients)
    for row in source:
        if isinstance(row, Recipient) and (line is None or row.line == line):
            break
    else:
        where = f" on line {line}" if line is not None else ""
        raise fail(f"no recipient row{where} in {recipients}")
    try:
        message = render_row(template, row, settings=settings)
        sender = message.sender or settings.default_sender or PREVIEW_SENDER
        content = message.to_bytes(sender)
    except MailerError as exc:
        raise fail(f"line {row.line}: {exc}") from None
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
