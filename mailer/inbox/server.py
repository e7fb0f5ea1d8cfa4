"""Run a local SMTP inbox (aiosmtpd) on loopback, in the caller's event loop.

It backs ``mailer demo``, ``mailer inbox`` and the integration tests. It never
relays anything, and it refuses to listen anywhere but a loopback address.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    LoginPassword,
    Session,
)
from aiosmtpd.smtp import (
    Envelope as ServerEnvelope,
)

from mailer.config.settings import is_loopback
from mailer.content.message import Envelope
from mailer.records import SentMail
from mailer.transports.base import AsyncCloseable

InboxTLS = Literal["starttls", "tls"] | None
# aiosmtpd's default is 32 MiB; say so explicitly, as the SIZE we advertise.
DEFAULT_SIZE_LIMIT = 33_554_432


class _DropOwnDeprecationNotice(logging.Filter):
    """Hide aiosmtpd's notice about its own use of Session.login_data.

    aiosmtpd 1.4 logs "Session.login_data is deprecated" on every successful
    AUTH, from its own code; it says nothing about ours and would fill the
    inbox's output.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Session.login_data is deprecated" not in record.getMessage()


_AIOSMTPD_LOG = logging.getLogger("mail.log")


class InboxHandler:
    """Keep each message received, and save it as an ``.eml`` file if asked."""

    def __init__(
        self,
        directory: Path | None = None,
        on_message: Callable[[SentMail, Path | None], None] | None = None,
    ) -> None:
        self.directory = directory
        self.on_message = on_message
        self.messages: list[SentMail] = []
        self._numbers = itertools.count(1)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: ServerEnvelope
    ) -> str:
        """Record the message and answer 250 with its number."""
        content = envelope.original_content or b""
        record = SentMail(
            envelope=Envelope(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                smtputf8="SMTPUTF8" in (o.upper() for o in envelope.mail_options),
            ),
            raw=content,
            mail_options=tuple(envelope.mail_options),
        )
        number = next(self._numbers)
        path = None
        if self.directory is not None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = self.directory / f"{stamp}-{number:05d}.eml"
            path.write_bytes(content)
        self.messages.append(record)
        if self.on_message is not None:
            self.on_message(record, path)
        return f"250 2.0.0 Ok: queued as {number}"


def _authenticator(users: Mapping[str, str]) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTP,
        session: Session,
        envelope: ServerEnvelope,
        mechanism: str,
        data: Any,
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login = data.login.decode("utf-8", "replace")
            password = data.password.decode("utf-8", "replace")
            if login in users and users[login] == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    return authenticate


class Inbox(AsyncCloseable):
    """A running inbox: where it listens and what it received."""

    def __init__(
        self,
        server: asyncio.Server,
        handler: InboxHandler,
        connections: weakref.WeakSet[SMTP],
        host: str,
    ) -> None:
        self._server = server
        self._connections = connections
        self.handler = handler
        self.host = host
        self.port: int = server.sockets[0].getsockname()[1]
        self.sessions_opened = 0

    @property
    def address(self) -> str:
        """Return ``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def messages(self) -> list[SentMail]:
        """Return the messages received so far, oldest first."""
        return self.handler.messages

    async def aclose(self) -> None:
        """Stop listening and drop any client still connected."""
        self._server.close()
        for protocol in list(self._connections):
            if protocol.transport is not None:
                protocol.transport.close()
        await self._server.wait_closed()


async def start_inbox(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    directory: Path | None = None,
    tls: InboxTLS = None,
    ssl_context: ssl.SSLContext | None = None,
    auth: Mapping[str, str] | None = None,
    require_starttls: bool = False,
    smtputf8: bool = True,
    size_limit: int = DEFAULT_SIZE_LIMIT,
    handler: InboxHandler | None = None,
    on_message: Callable[[SentMail, Path | None], None] | None = None,
    protocol: Callable[..., SMTP] = SMTP,
) -> Inbox:
    """Start an inbox on ``host:port`` (port 0: one the OS picks).

    Args:
        host: A loopback address; anything else is refused.
        port: The port, or 0 for a free one (read it back from ``Inbox.port``).
        directory: Save each message there as an ``.eml`` file.
        tls: ``"starttls"`` to offer STARTTLS, ``"tls"`` for implicit TLS.
        ssl_context: The server's certificate, required with ``tls``.
        auth: ``{user: password}``; when given, sending requires logging in.
        require_starttls: Refuse every command but EHLO/STARTTLS before TLS.
        smtputf8: Advertise SMTPUTF8.
        size_limit: The SIZE advertised and enforced, in bytes.
        handler: A handler to use instead of a new InboxHandler.
        on_message: Called with each message (and its file) as it arrives.
        protocol: Makes each session: aiosmtpd's ``SMTP`` or a subclass taking
            the same arguments (the test server's fault-injecting one).

    Raises:
        ValueError: ``host`` is not loopback, or ``tls`` lacks ``ssl_context``.
    """
    if not is_loopback(host):
        raise ValueError(f"the inbox only listens on loopback, not {host!r}")
    if not any(isinstance(f, _DropOwnDeprecationNotice) for f in _AIOSMTPD_LOG.filters):
        _AIOSMTPD_LOG.addFilter(_DropOwnDeprecationNotice())
    if tls is not None and ssl_context is None:
        raise ValueError(f"tls={tls!r} needs an ssl_context")
    if directory is not None:
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    handler = handler if handler is not None else InboxHandler(directory, on_message)
    loop = asyncio.get_running_loop()
    # Weak: a standing inbox must not keep every past session alive.
    connections: weakref.WeakSet[SMTP] = weakref.WeakSet()
    inbox: Inbox | None = None

    def new_session() -> SMTP:
        session = protocol(
            handler,
            hostname="localhost",  # never socket.getfqdn(): it can stall for seconds
            ident="mailer inbox",
            tls_context=ssl_context if tls == "starttls" else None,
            require_starttls=require_starttls,
            auth_require_tls=True,
            auth_required=auth is not None,
            authenticator=_authenticator(auth) if auth is not None else None,
            enable_SMTPUTF8=smtputf8,
            data_size_limit=size_limit,
            loop=loop,
        )
        if tls == "tls":
            # With implicit TLS the socket is encrypted from the start, but
            # aiosmtpd only counts STARTTLS as TLS for AUTH: tell it so. Not
            # through the constructor, which would warn (an error under pytest's
            # filterwarnings=error) that AUTH is required without TLS.
            session._auth_require_tls = False
        connections.add(session)
        if inbox is not None:
            inbox.sessions_opened += 1
        return session

    server = await loop.create_server(
        new_session,
        host=host,
        port=port,
        ssl=ssl_context if tls == "tls" else None,
    )
    inbox = Inbox(server, handler, connections, host)
    return inbox
