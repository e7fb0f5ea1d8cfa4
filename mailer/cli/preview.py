"""Run ``mailer preview``: render one row and print it, or serve every set's preview."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailer.bulk.recipients import InvalidRow, Recipient
from mailer.bulk.sending import render_row
from mailer.cli.common import (
    AttachColumnOption,
    AttachmentsDirOption,
    AttachOption,
    EnvFileOption,
    OptionalTemplateOption,
    TemplatesDirOption,
    describe_attachments,
    fail,
    load_settings,
    open_recipients,
    row_attachments,
    settings_note,
)
from mailer.content.addresses import Address
from mailer.exceptions import MailerError
from mailer.records import SentMail
from mailer.templates.sets import load_template_set

PREVIEW_SENDER = Address.parse("preview@example.test", field="sender")


def preview(
    template: OptionalTemplateOption = None,
    recipients: Annotated[
        Path | None,
        typer.Option(
            "--recipients",
            "-r",
            metavar="FILE",
            help="A .csv or .jsonl file (with --serve: sample data for every set).",
        ),
    ] = None,
    line: Annotated[
        int | None,
        typer.Option(
            "--line",
            metavar="N",
            help="Preview the row on line N of the file (line 1 of a CSV file is "
            "its header).",
        ),
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
        int,
        typer.Option(
            metavar="PORT", help="With --serve: the web page's port (0: any free)."
        ),
    ] = 8025,
    templates_dir: TemplatesDirOption = None,
    attach: AttachOption = None,
    attach_column: AttachColumnOption = None,
    attachments_dir: AttachmentsDirOption = None,
    env_file: EnvFileOption = None,
) -> None:
    """Render TEMPLATE for one recipient (the first, or --line) and print it.

    With --serve, show every template set in the browser instead.
    """
    settings = load_settings(templates_dir, env_file)
    if serve:
        from mailer.cli.previews import serve_previews

        serve_previews(settings.templates_dir, recipients, http_port)
        return
    if template is None or recipients is None:
        raise fail("give --template and --recipients (or --serve for the web page)")
    source = open_recipients(recipients)
    try:
        # Loaded before a row is picked: an error in the set is about the set,
        # not about the row that happened to be previewed.
        templates = load_template_set(template, settings.templates_dir)
    except MailerError as exc:
        raise fail(f"{exc}{settings_note()}") from None
    if line is not None and line < 1:
        raise fail(f"--line {line}: lines are numbered from 1")
    if line == 1 and source.kind == "csv":
        raise fail(
            f"--line 1: line 1 of {recipients} is the header row; "
            "the first recipient is on line 2"
        )
    files = row_attachments(attach, attach_column, attachments_dir)
    for row in source:
        if line is not None and row.line == line and isinstance(row, InvalidRow):
            raise fail(f"line {line}: {row.error}")
        if isinstance(row, Recipient) and (line is None or row.line == line):
            break
    else:
        where = f" on line {line}" if line is not None else ""
        raise fail(f"no recipient row{where} in {recipients}")
    try:
        message = render_row(
            template, row, settings=settings, templates=templates, attachments=files
        )
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
    if message.unsubscribe is not None:
        print(f"List-Unsubscribe: {mail.header('List-Unsubscribe')}")
    if message.attachments:
        print(f"Attachments: {describe_attachments(message.attachments)}")
    print()
    _print_block(mail.text or "")
    if mail.html is not None:
        print("--- HTML ---")
        _print_block(mail.html)


def _print_block(text: str) -> None:
    print(text, end="" if text.endswith("\n") else "\n")
