"""Run ``mailer worker``: deliver queued mail until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from mailer.cli.common import EXIT_FAILED, err, load_settings, run_command
from mailer.cli.shutdown import Shutdown
from mailer.config.settings import MailerSettings


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            min=1,
            max=1000,
            help="Jobs run at once; default MAILER_CONCURRENCY. They share the "
            "process's MAILER_CONCURRENCY SMTP connections.",
        ),
    ] = None,
) -> None:
    """Deliver mail from the queue (MAILER_QUEUE_DSN) until SIGTERM or Ctrl-C."""
    settings = load_settings(None)
    raise typer.Exit(run_command(_work(settings, concurrency or settings.concurrency)))


async def _work(settings: MailerSettings, concurrency: int) -> int:
    from mailer.queue.database import queue_dsn
    from mailer.queue.worker import run_worker

    queue_dsn(settings)  # a missing setting or extra: one line, exit 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    # The queue's own messages, and the shared rate limits' slow-downs.
    for name in ("mailer.queue", "mailer.ratelimit"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)

    def first_signal(name: str) -> None:
        err.print(
            f"{name}: stopping; no new job starts, the transactions in flight get "
            f"up to {settings.shutdown_grace:g}s (press Ctrl-C again to quit at once)"
        )

    def second_signal(name: str) -> None:
        err.print(
            f"{name} again: quitting now; the jobs in flight go back to the queue "
            "once this worker's heartbeat is missed"
        )

    def started(name: str) -> None:
        print(
            f"worker {name} taking jobs from the queue, {concurrency} at a time "
            "(SIGTERM or Ctrl-C to stop)",
            flush=True,
        )

    shutdown = Shutdown(on_first=first_signal, on_second=second_signal)
    with shutdown.installed():
        await run_worker(
            settings, concurrency=concurrency, stop=shutdown.stop, on_started=started
        )
    if shutdown.exit_code is None:
        err.print("error: the worker stopped by itself (see the messages above)")
        return EXIT_FAILED
    print("worker stopped; every outcome is recorded", flush=True)
    return shutdown.exit_code
