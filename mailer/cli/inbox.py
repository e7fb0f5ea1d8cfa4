"""Run ``mailer inbox``: a local SMTP inbox with a web page, for development."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailer.cli.common import (
    EXIT_OK,
    TemplatesDirOption,
    fail,
    load_settings,
    run_command,
)
from mailer.cli.shutdown import Shutdown
from mailer.exceptions import MailerError
from mailer.inbox.limits import DEFAULT_MAX_CONNECTIONS
from mailer.inbox.service import DEFAULT_SMTP_PORT, open_dev_inbox, web_missing
from mailer.inbox.store import DEFAULT_MAX_MESSAGES
from mailer.records import SentMail

DEFAULT_HTTP_PORT = 8025


def inbox(
    port: Annotated[
        int,
        typer.Option(metavar="PORT", help="SMTP port to listen on (0: any free port)."),
    ] = DEFAULT_SMTP_PORT,
    http_port: Annotated[
        int, typer.Option(metavar="PORT", help="Web page port (0: any free port).")
    ] = DEFAULT_HTTP_PORT,
    no_web: Annotated[
        bool, typer.Option("--no-web", help="SMTP only: no web page.")
    ] = False,
    host: Annotated[
        str, typer.Option(metavar="ADDR", help="Loopback address to listen on.")
    ] = "127.0.0.1",
    directory: Annotated[
        Path,
        typer.Option(
            "--dir", metavar="DIR", help="Where messages are kept (.eml files)."
        ),
    ] = Path("mailer-inbox"),
    max_messages: Annotated[
        int,
        typer.Option(
            metavar="N", help="Messages kept; the oldest are deleted past it."
        ),
    ] = DEFAULT_MAX_MESSAGES,
    max_connections: Annotated[
        int, typer.Option(metavar="N", help="SMTP connections at once; more get a 421.")
    ] = DEFAULT_MAX_CONNECTIONS,
    templates_dir: TemplatesDirOption = None,
) -> None:
    """Run a local inbox for development (loopback only) until Ctrl-C.

    SMTP on --port (1025) keeps every message in --dir; the web page on
    --http-port (8025) lists them, shows each one and previews the templates.
    """
    if max_messages < 1:
        raise fail("--max-messages: keep at least 1 message")
    if max_connections < 1:
        raise fail("--max-connections: allow at least 1 connection")
    if not no_web and (missing := web_missing()) is not None:
        raise fail(
            f"the web page needs the web extra: {missing} (or run with --no-web)"
        )
    templates = None
    if not no_web:
        folder = load_settings(templates_dir).templates_dir
        templates = folder if folder.is_dir() else None
    raise typer.Exit(
        run_command(
            _serve(
                host=host,
                port=port,
                http_port=None if no_web else http_port,
                directory=directory,
                max_messages=max_messages,
                max_connections=max_connections,
                templates_dir=templates,
            )
        )
    )


def say(text: str) -> None:
    """Print a line; if stdout is gone (piped into ``head``), carry on silently."""
    try:
        print(text, flush=True)
    except OSError:
        # Point stdout at /dev/null so neither later prints nor the flush at
        # exit fail again: the inbox keeps serving (and keeps every message).
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def log_to_stderr() -> None:
    """Show the inbox's warnings on stderr, one line each."""
    logger = logging.getLogger("mailer.inbox")
    if any(getattr(h, "mailer_cli", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.mailer_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


async def _serve(
    *,
    host: str,
    port: int,
    http_port: int | None,
    directory: Path,
    max_messages: int,
    max_connections: int,
    templates_dir: Path | None,
) -> int:
    def show(mail: SentMail, path: Path | None) -> None:
        say(
            f"{mail.envelope.mail_from} -> {', '.join(mail.envelope.rcpt_tos)}: "
            f"{mail.subject!r} ({len(mail.raw)} bytes) saved to {path}"
        )

    log_to_stderr()
    try:
        server = await open_dev_inbox(
            directory=directory,
            host=host,
            smtp_port=port,
            http_port=http_port,
            max_messages=max_messages,
            max_connections=max_connections,
            templates_dir=templates_dir,
            on_message=show,
        )
    except (OSError, ValueError) as exc:
        where = f"{host}:{port}" + ("" if http_port is None else f" and {http_port}")
        raise MailerError(f"cannot listen on {where}: {exc}") from None
    # Our own handlers, not KeyboardInterrupt: SIGTERM (a service manager, a
    # container stop) ends it as cleanly as Ctrl-C, and so does a SIGINT sent
    # to an inbox started in the background (where SIGINT starts ignored).
    shutdown = Shutdown()
    async with server:
        with shutdown.installed():
            web = f" and {server.web.url}" if server.web is not None else ""
            say(
                f"inbox listening on {server.smtp.host}:{server.smtp.port}{web}, "
                f"keeping {len(server.store)} message(s) in {directory} "
                "(Ctrl-C to stop)"
            )
            await shutdown.stop.wait()
    received = server.smtp.handler.received
    say(f"inbox stopped; {received} message(s) received")
    return shutdown.exit_code if shutdown.exit_code is not None else EXIT_OK
