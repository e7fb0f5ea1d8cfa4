"""Run ``mailer status``: what a journal, a queued batch or the queue says."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailer.bulk.status import journal_status
from mailer.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    fail,
    load_settings,
    run_command,
)
from mailer.config.settings import MailerSettings
from mailer.exceptions import MailerError


def status(
    journal: Annotated[
        Path | None,
        typer.Option(
            "--journal", metavar="FILE", help="The journal of a `mailer send` run."
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch",
            metavar="ID",
            help="A batch enqueued with `mailer send --queue`.",
        ),
    ] = None,
    queue: Annotated[
        bool, typer.Option("--queue", help="Everything in the queue database.")
    ] = False,
) -> None:
    """Print counts by state and list the failed messages (exit 0 if all sent)."""
    chosen = [
        name
        for name, on in (
            ("--journal", journal is not None),
            ("--batch", batch is not None),
            ("--queue", queue),
        )
        if on
    ]
    if len(chosen) != 1:
        raise fail("give one of --journal FILE, --batch ID or --queue")
    if journal is None:
        settings = load_settings(None)
        raise typer.Exit(run_command(_queue_status(settings, batch)))
    try:
        state = journal_status(journal)
    except MailerError as exc:
        raise fail(str(exc)) from None
    for line in state.lines():
        print(line)
    raise typer.Exit(EXIT_OK if state.is_complete else EXIT_FAILED)


async def _queue_status(settings: MailerSettings, batch: int | None) -> int:
    from mailer.queue.status import queue_status

    state = await queue_status(settings, batch_id=batch)
    for line in state.lines():
        print(line)
    return EXIT_OK if state.is_complete else EXIT_FAILED
