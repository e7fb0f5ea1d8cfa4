"""Run ``mailer inbox``: a local SMTP inbox for development."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailer.cli.common import (
    EXIT_OK,
    run_command,
)
from mailer.cli.shutdown import Shutdown
from mailer.exceptions import MailerError
from mailer.inbox.server import start_inbox
from mailer.records import SentMail


def inbox(
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port to listen on.")
    ] = 1025,
    host: Annotated[
        str, typer.Option(metavar="ADDR", help="Loopback address to listen on.")
    ] = "127.0.0.1",
    directory: Annotated[
        Path,
        typer.Option(
            "--dir", metavar="DIR", help="Where to save each message as .eml."
        ),
    ] = Path("mailer-inbox"),
) -> None:
    """Run a local SMTP inbox for development (loopback only) until Ctrl-C."""
    raise typer.Exit(run_command(_serve(host, port, directory)))


async def _serve(host: str, port: int, directory: Path) -> int:
    def show(mail: SentMail, path: Path | None) -> None:
        print(
            f"{mail.envelope.mail_from} -> {', '.join(mail.envelope.rcpt_tos)}: "
            f"{mail.subject!r} ({len(mail.raw)} bytes) saved to {path}",
            flush=True,
        )

    try:
        server = await start_inbox(
            host=host, port=port, directory=directory, on_message=show
        )
    except (OSError, ValueError) as exc:
        raise MailerError(f"cannot listen on {host}:{port}: {exc}") from None
    # Our own handlers, not KeyboardInterrupt: SIGTERM (a service manager, a
    # container stop) ends it as cleanly as Ctrl-C, and so does a SIGINT sent
    # to an inbox started in the background (where SIGINT starts ignored).
    shutdown = Shutdown()
    async with server:
        with shutdown.installed():
            print(
                f"inbox listening on {server.host}:{server.port}, saving to "
                f"{directory} (Ctrl-C to stop)",
                flush=True,
            )
            await shutdown.stop.wait()
    print(f"inbox stopped; {len(server.messages)} message(s) received", flush=True)
    return shutdown.exit_code if shutdown.exit_code is not None else EXIT_OK
