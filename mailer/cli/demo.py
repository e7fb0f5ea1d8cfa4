"""Run ``mailer demo``: the example batch through an inbox of its own."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from mailer.bulk.recipients import RecipientFile
from mailer.bulk.sending import send_messages
from mailer.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    run_command,
)
from mailer.config.settings import MailerSettings
from mailer.inbox.server import start_inbox


def demo(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", metavar="DIR", help="Where to save the .eml files."),
    ] = None,
) -> None:
    """Send the example template through a local SMTP inbox; needs no configuration."""
    raise typer.Exit(run_command(_demo(directory)))


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
