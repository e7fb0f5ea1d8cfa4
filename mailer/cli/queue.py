"""Run ``mailer queue init``: create or migrate the queue's tables."""

from __future__ import annotations

import typer

from mailer.cli.common import EXIT_OK, load_settings, run_command
from mailer.config.settings import MailerSettings

queue_app = typer.Typer(
    no_args_is_help=True,
    help="Manage the mail queue in PostgreSQL (MAILER_QUEUE_DSN).",
)


@queue_app.command()
def init() -> None:
    """Create procrastinate's schema and mailer's tables; safe to run again."""
    settings = load_settings(None)
    raise typer.Exit(run_command(_init(settings)))


async def _init(settings: MailerSettings) -> int:
    from mailer.queue.database import connect, database_errors, queue_dsn
    from mailer.queue.schema import LATEST, apply_schema

    dsn = queue_dsn(settings)
    async with connect(settings, action="cannot initialise the queue") as connection:
        with database_errors("cannot initialise the queue", dsn):
            done = await apply_schema(connection)
    for line in done:
        print(line)
    print(
        f"queue ready: mailer schema version {LATEST}"
        + ("" if done else " (nothing to do)")
    )
    return EXIT_OK
