"""Run ``mailer preview --serve``: every template set's preview on a web page."""

from __future__ import annotations

from pathlib import Path

import typer

from mailer.bulk.recipients import Recipient
from mailer.cli.common import EXIT_OK, fail, open_recipients, run_command
from mailer.cli.inbox import log_to_stderr, say
from mailer.cli.shutdown import Shutdown
from mailer.exceptions import MailerError
from mailer.inbox.previews import Sample
from mailer.inbox.service import web_missing

# Rows of a recipients file offered as samples: enough to pick from.
MAX_SAMPLE_ROWS = 50


def serve_previews(
    templates_dir: Path, recipients: Path | None, http_port: int
) -> None:
    """Serve the previews of ``templates_dir`` until Ctrl-C (exits the process)."""
    if (missing := web_missing()) is not None:
        raise fail(f"--serve needs the web extra: {missing}")
    if not templates_dir.is_dir():
        raise fail(
            f"templates directory {templates_dir} does not exist "
            "(set MAILER_TEMPLATES_DIR or --templates-dir)"
        )
    rows: list[Sample] = []
    if recipients is not None:
        for row in open_recipients(recipients):
            if isinstance(row, Recipient):
                rows.append(Sample(f"line {row.line}: {row.email}", row.context))
            if len(rows) >= MAX_SAMPLE_ROWS:
                break
    raise typer.Exit(run_command(_serve(templates_dir, rows, http_port)))


async def _serve(templates_dir: Path, rows: list[Sample], http_port: int) -> int:
    from mailer.inbox.app import create_app
    from mailer.inbox.webserver import start_web

    log_to_stderr()
    try:
        web = await start_web(
            create_app(None, templates_dir=templates_dir, rows=rows), port=http_port
        )
    except (OSError, ValueError) as exc:
        raise MailerError(f"cannot listen on 127.0.0.1:{http_port}: {exc}") from None
    shutdown = Shutdown()
    async with web:
        with shutdown.installed():
            say(
                f"previews of {templates_dir} on {web.url}/templates "
                "(reloads on every change; Ctrl-C to stop)"
            )
            await shutdown.stop.wait()
    return shutdown.exit_code if shutdown.exit_code is not None else EXIT_OK
