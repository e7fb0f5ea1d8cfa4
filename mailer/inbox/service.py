"""Run the whole development inbox: a message store, SMTP, and the web pages.

::

    async with await open_dev_inbox(directory=Path("mailer-inbox")) as inbox:
        print(inbox.smtp.port, inbox.web.url if inbox.web else "no web")

Both servers listen on loopback only and share the running event loop. The web
part needs the ``web`` extra; ``web_missing()`` says whether it is installed.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.inbox.limits import DEFAULT_MAX_CONNECTIONS
from mailer.inbox.previews import Sample
from mailer.inbox.server import Inbox, InboxHandler, start_inbox
from mailer.inbox.store import DEFAULT_MAX_MESSAGES, MailStore
from mailer.records import SentMail
from mailer.transports.base import AsyncCloseable

if TYPE_CHECKING:
    from mailer.inbox.webserver import WebServer

WEB_EXTRA = "pip install 'aiomailer[web]'"
DEFAULT_SMTP_PORT = 1025


def web_missing() -> str | None:
    """Return the install command when the web extra is missing, else None."""
    for module in ("starlette", "uvicorn"):
        try:
            importlib.import_module(module)
        except ImportError:
            return WEB_EXTRA
    return None


class DevInbox(AsyncCloseable):
    """A running development inbox.

    Attributes:
        store: The messages, on disk.
        smtp: The SMTP server.
        web: The web server, unless started without it.
    """

    def __init__(self, store: MailStore, smtp: Inbox, web: WebServer | None) -> None:
        self.store = store
        self.smtp = smtp
        self.web = web

    async def aclose(self) -> None:
        """Stop the web server, then SMTP."""
        try:
            if self.web is not None:
                await self.web.aclose()
        finally:
            await self.smtp.aclose()


async def open_dev_inbox(
    *,
    directory: Path,
    host: str = "127.0.0.1",
    smtp_port: int = DEFAULT_SMTP_PORT,
    http_port: int | None = 0,
    max_messages: int | None = DEFAULT_MAX_MESSAGES,
    max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
    templates_dir: Path | None = None,
    rows: Sequence[Sample] = (),
    on_message: Callable[[SentMail, Path | None], None] | None = None,
) -> DevInbox:
    """Load the store from ``directory`` and start SMTP (and the web pages).

    Args:
        directory: Where messages are kept (created if missing).
        host: The loopback address both servers listen on.
        smtp_port: SMTP's port (0: one the OS picks).
        http_port: The web port (0: one the OS picks; ``None``: no web).
        max_messages: How many messages to keep; the oldest go first.
        max_connections: SMTP connections at once (a 421 past it).
        templates_dir: Template sets for the Templates tab.
        rows: Sample data for sets without a ``preview.json``.
        on_message: Called with each message and its file.

    Raises:
        ValueError: ``host`` is not loopback.
        OSError: A port is taken, or the folder cannot be used.
        ImportError: ``http_port`` is set but the web extra is missing.
    """
    store = MailStore(directory, max_messages=max_messages)
    await asyncio.to_thread(store.load)
    handler = InboxHandler(store=store, on_message=on_message, keep_messages=False)
    smtp = await start_inbox(
        host=host,
        port=smtp_port,
        handler=handler,
        max_connections=max_connections,
    )
    web = None
    if http_port is not None:
        try:
            from mailer.inbox.app import create_app
            from mailer.inbox.webserver import start_web

            app = create_app(store, templates_dir=templates_dir, rows=rows)
            web = await start_web(app, host=host, port=http_port)
        except BaseException:
            await smtp.aclose()
            raise
    return DevInbox(store, smtp, web)
