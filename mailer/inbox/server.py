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
from mailer.inbox.files import write_atomically
from mailer.inbox.limits import (
    DEFAULT_MAX_CONNECTIONS,
    LOG,
    MAX_LINE_BYTES,
    LineCap,
    Refusal,
    ThrottledLog,
    quiet_accept_errors,
    restore_exception_handler,
)
from mailer.inbox.store import MailStore
from mailer.records import SentMail, SessionInfo, SessionTLS, as_utf8
from mailer.transports.base import AsyncCloseable

InboxTLS = Literal["starttls", "tls"] | None
# aiosmtpd's default is 32 MiB; say so explicitly, as the SIZE we advertise.
DEFAULT_SIZE_LIMIT = 33_554_432
# For the inbox's own trouble (a full disk, a folder deleted under it): the
# sender keeps the message and tries again; the reply never names a path.
LOCAL_ERROR_REPLY = "451 4.3.0 mailer inbox: local error in processing, try again later"


class _DropOwnDeprecationNotice(logging.Filter):
    """Hide aiosmtpd's notice about its own use of Session.login_data.

    aiosmtpd 1.4 logs "Session.login_data is deprecated" on every successful
    AUTH, from its own code; it says nothing about ours and would fill the
    inbox's output.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Session.login_data is deprecated" not in record.getMessage()


_AIOSMTPD_LOG = logging.getLogger("mail.log")


class InboxSMTP(SMTP):
    """aiosmtpd's SMTP session, with bounded lines and the session's facts.

    A line is never buffered past ``MAX_LINE_BYTES`` (``LineCap``); the
    factory in ``start_inbox`` numbers each session.
    """

    number = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._line_cap = LineCap(MAX_LINE_BYTES)
        self.is_closed = False

    def data_received(self, data: bytes) -> None:
        """Pass what the client sent on to aiosmtpd, less an overlong line's rest."""
        kept = self._line_cap.feed(data)
        if kept:
            super().data_received(kept)

    def connection_lost(self, exc: Exception | None) -> None:
        """Note that the session ended, then let aiosmtpd clean up."""
        self.is_closed = True
        super().connection_lost(exc)

    def session_info(self) -> SessionInfo:
        """Return what is known about this session now."""
        session = self.session
        if session is None:
            raise RuntimeError("no session before the connection is made")
        ssl_object = (
            self.transport.get_extra_info("ssl_object") if self.transport else None
        )
        tls: SessionTLS = "none"
        if ssl_object is not None:
            # STARTTLS leaves aiosmtpd's TLS protocol object behind; implicit
            # TLS was set up by the event loop before aiosmtpd saw the socket.
            tls = "starttls" if self._tls_protocol is not None else "tls"
        # aiosmtpd's annotations are narrower than what it stores: the peer is
        # the socket's (host, port) and auth_data what the authenticator gave.
        peer: Any = session.peer or ("", 0)
        auth_data: Any = session.auth_data
        return SessionInfo(
            number=self.number,
            peer=(str(peer[0]), int(peer[1])),
            helo=session.host_name,
            tls=tls,
            tls_version=ssl_object.version() if ssl_object is not None else None,
            auth_username=auth_data
            if session.authenticated and isinstance(auth_data, str)
            else None,
        )


class InboxHandler:
    """Keep each message received: in memory, as an ``.eml`` file, or in a store.

    Its own failures never look permanent to the sender: a message that cannot
    be saved gets a 451 (try again later) that names no path, and a failing
    ``on_message`` (a closed stdout) never fails a message.

    Args:
        directory: Save each message there as an ``.eml`` file.
        on_message: Called with each message (and its file) as it arrives.
        store: Keep messages in this store instead (it names the files).
        keep_messages: Also keep every message in ``messages`` (memory grows
            with each; a long-running inbox with a store turns it off).
    """

    def __init__(
        self,
        directory: Path | None = None,
        on_message: Callable[[SentMail, Path | None], None] | None = None,
        *,
        store: MailStore | None = None,
        keep_messages: bool = True,
    ) -> None:
        self.directory = directory
        self.on_message = on_message
        self.store = store
        self.keep_messages = keep_messages
        self.messages: list[SentMail] = []
        self.received = 0
        self.trouble = ThrottledLog()
        self._numbers = itertools.count(1)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: ServerEnvelope
    ) -> str:
        """Record the message and answer 250 with its number (451 if it cannot)."""
        content = envelope.original_content or b""
        record = SentMail(
            envelope=Envelope(
                # aiosmtpd keeps 8-bit bytes sent without SMTPUTF8 as lone
                # surrogates, which no Envelope takes: show them as read
                # (UTF-8, else U+FFFD) rather than refuse the message for ever.
                mail_from=as_utf8(envelope.mail_from or ""),
                rcpt_tos=tuple(as_utf8(r) for r in envelope.rcpt_tos),
                smtputf8="SMTPUTF8" in (o.upper() for o in envelope.mail_options),
            ),
            raw=content,
            mail_options=tuple(envelope.mail_options),
            session=server.session_info() if isinstance(server, InboxSMTP) else None,
        )
        number = next(self._numbers)
        try:
            path = await self._save(record, number)
        except OSError as exc:
            self.trouble.warning(
                "save",
                f"inbox: cannot save a message in {self._folder()}: "
                f"{exc.strerror or exc}; the sender was told to try again (451)",
            )
            return LOCAL_ERROR_REPLY
        self.received += 1
        if self.keep_messages:
            self.messages.append(record)
        if self.on_message is not None:
            try:
                self.on_message(record, path)
            except Exception:  # noqa: BLE001 - a failing print must not fail a message
                self.trouble.warning(
                    "notify", "inbox: could not report a message (it was kept)"
                )
        return f"250 2.0.0 Ok: queued as {number}"

    async def handle_exception(self, error: Exception) -> str:
        """Answer 451 for an unexpected error of our own, and log it."""
        if self.trouble.warning("error", f"inbox: unexpected error: {error!r}"):
            LOG.debug("inbox: unexpected error", exc_info=error)
        return LOCAL_ERROR_REPLY

    async def _save(self, record: SentMail, number: int) -> Path | None:
        if self.store is not None:
            stored = await self.store.add(record)
            return self.store.path(stored.id)
        if self.directory is None:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.directory / f"{stamp}-{number:05d}.eml"
        await asyncio.to_thread(write_atomically, path, record.raw, durable=False)
        return path

    def _folder(self) -> str:
        if self.store is not None:
            return str(self.store.directory)
        return str(self.directory)


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
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._server = server
        self._connections = connections
        self._on_close = on_close
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

    @property
    def active_connections(self) -> int:
        """Return how many client connections are open now."""
        return _open_sessions(self._connections)

    async def aclose(self) -> None:
        """Stop listening and drop any client still connected."""
        self._server.close()
        for protocol in list(self._connections):
            if protocol.transport is not None:
                protocol.transport.close()
        await self._server.wait_closed()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


def _open_sessions(connections: weakref.WeakSet[SMTP]) -> int:
    # A session still in its TLS handshake counts: it holds a socket too.
    return sum(1 for s in list(connections) if not getattr(s, "is_closed", False))


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
    max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
    handler: InboxHandler | None = None,
    on_message: Callable[[SentMail, Path | None], None] | None = None,
    protocol: Callable[..., SMTP] = InboxSMTP,
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
        max_connections: Connections open at once; one more gets a 421 and
            is closed (``None``: no limit).
        handler: A handler to use instead of a new InboxHandler.
        on_message: Called with each message (and its file) as it arrives.
        protocol: Makes each session: ``InboxSMTP`` or a subclass taking
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
    if max_connections is not None and max_connections < 1:
        raise ValueError("max_connections: allow at least 1 connection")
    if directory is not None:
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    handler = handler if handler is not None else InboxHandler(directory, on_message)
    loop = asyncio.get_running_loop()
    # Weak: a standing inbox must not keep every past session alive.
    connections: weakref.WeakSet[SMTP] = weakref.WeakSet()
    inbox: Inbox | None = None
    numbers = itertools.count(1)

    def new_session() -> asyncio.Protocol:
        if (
            max_connections is not None
            and _open_sessions(connections) >= max_connections
        ):
            handler.trouble.warning(
                "connections",
                f"inbox: {max_connections} connections are open; refusing more "
                "with 421 (see --max-connections)",
            )
            return Refusal()
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
        if isinstance(session, InboxSMTP) and not session.number:
            session.number = next(numbers)
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
    installed = quiet_accept_errors(loop, handler.trouble)
    inbox = Inbox(
        server,
        handler,
        connections,
        host,
        on_close=lambda: restore_exception_handler(loop, installed),
    )
    return inbox
