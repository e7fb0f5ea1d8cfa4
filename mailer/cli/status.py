"""Run ``mailer status``: what a journal says about its batch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailer.bulk.status import journal_status
from mailer.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    fail,
)
from mailer.exceptions import MailerError


def status(
    journal: Annotated[
        Path,
        typer.Option(
            "--journal", metavar="FILE", help="The journal of a `mailer send` run."
        ),
    ],
) -> None:
    """Print a journal's counts by state and list its failed messages."""
    try:
        state = journal_status(journal)
    except MailerError as exc:
        raise fail(str(exc)) from None
    for line in state.lines():
        print(line)
    raise typer.Exit(EXIT_OK if state.is_complete else EXIT_FAILED)
