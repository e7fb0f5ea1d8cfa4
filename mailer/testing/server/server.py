"""Run a real SMTP server for tests, in the test's own event loop, with faults.

::

    async with SMTPTestServer(tls="starttls", auth={"svc": "pw"}) as server:
        server.faults.reply("MAIL", 451, "4.7.1 Try again later", times=1)
        async with MessageClient(server.settings()) as client:
            ...
        server.outbox.assert_sent(to="bob@example.test")

The server is ``mailer.inbox.server``'s aiosmtpd server on 127.0.0.1 and a port the OS
picks, with sessions that obey ``server.faults`` and record TLS and AUTH facts.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self

from mailer.config.settings import MailerSettings, is_loopback
from mailer.inbox.server import DEFAULT_SIZE_LIMIT, Inbox, start_inbox
from mailer.testing.config import TEST_SENDER, isolated_settings
from mailer.testing.outbox import Outbox
from mailer.testing.server.faults import FaultPlan
from mailer.testing.server.protocol import FaultySMTP, RecordingHandler
from mailer.testing.tls import OwnedTLSBundle, TLSBundle

ServerTLS = Literal["starttls", "tls"] | None
DEFAULT_SENDER = TEST_SENDER
# Short enough that a test waiting on a broken server fails in seconds.
DEFAULT_CLIENT_TIMEOUT = 10.0
# Retries stay on, as in production, but a test should not sleep for seconds.
TEST_RETRY_BACKOFF = 0.01


class SMTPTestServer:
    """A real SMTP server for tests: 127.0.0.1, a free port, the running loop.

    Args:
        tls: ``"starttls"`` to offer STARTTLS, ``"tls"`` for implicit TLS
            (as on port 465), ``None`` for plain SMTP.
        auth: ``{user: password}``; logging in is then required to send.
            Needs ``tls`` (AUTH is only offered over TLS).
        require_starttls: Refuse everything but EHLO/STARTTLS/QUIT before TLS.
        smtputf8: Offer SMTPUTF8 (non-ASCII addresses).
        size_limit: The SIZE advertised and enforced, in bytes; ``None`` for
            no limit (and no SIZE extension).
        pipelining: Advertise PIPELINING.
        tls_bundle: The certificates to use; a new test CA by default.
        host: A loopback address to listen on.

    Raises:
        ValueError: Options that cannot work together, or a host that is not
            loopback.
    """

    def __init__(
        self,
        *,
        tls: ServerTLS = None,
        auth: Mapping[str, str] | None = None,
        require_starttls: bool = False,
        smtputf8: bool = True,
        size_limit: int | None = DEFAULT_SIZE_LIMIT,
        pipelining: bool = True,
        tls_bundle: TLSBundle | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if tls not in (None, "starttls", "tls"):
            raise ValueError(f"tls: use None, 'starttls' or 'tls', not {tls!r}")
        if require_starttls and tls != "starttls":
            raise ValueError("require_starttls: needs tls='starttls'")
        if auth is not None and tls is None:
            raise ValueError(
                "auth: needs tls='starttls' or tls='tls' (the server offers AUTH "
                "only over TLS, as real servers do)"
            )
        if auth is not None and not auth:
            raise ValueError("auth: give at least one {user: password}")
        if size_limit is not None and size_limit < 1:
            raise ValueError("size_limit: must be 1 or more, or None for no limit")
        if not is_loopback(host):
            raise ValueError(f"host: only loopback addresses, not {host!r}")
        self.tls = tls
        self.auth = dict(auth) if auth is not None else None
        self.require_starttls = require_starttls
        self.smtputf8 = smtputf8
        self.size_limit = size_limit
        self.pipelining = pipelining
        self.host = host
        self.faults = FaultPlan()
        self.outbox = Outbox()
        self.transcripts: list[list[str]] = []
        self._tls_bundle = tls_bundle
        self._owned_bundle: OwnedTLSBundle | None = None
        self._inbox: Inbox | None = None
        self._port: int | None = None
        self._numbers = itertools.count(1)
        # Weak: a server kept for a whole test run must not keep every session.
        self._sessions: weakref.WeakSet[FaultySMTP] = weakref.WeakSet()

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> Self:
        """Start listening (on a port the OS picks).

        Raises:
            RuntimeError: Already started.
        """
        if self._inbox is not None:
            raise RuntimeError("the test SMTP server is already running")
        if self.tls is not None and self._tls_bundle is None:
            self._owned_bundle = OwnedTLSBundle()
            self._tls_bundle = self._owned_bundle.bundle
        handler = RecordingHandler(
            self.faults, self.outbox.append, pipelining=self.pipelining
        )
        bundle = self._tls_bundle
        try:
            self._inbox = await start_inbox(
                host=self.host,
                tls=self.tls,
                ssl_context=bundle.server_context if bundle is not None else None,
                auth=self.auth,
                require_starttls=self.require_starttls,
                smtputf8=self.smtputf8,
                size_limit=self.size_limit or 0,
                handler=handler,
                protocol=self._new_session,
            )
        except BaseException:
            self._release_bundle()
            raise
        self._port = self._inbox.port
        return self

    async def stop(self) -> None:
        """Stop listening and drop every client still connected (idempotent)."""
        inbox, self._inbox = self._inbox, None
        try:
            if inbox is not None:
                await inbox.aclose()
        finally:
            self._release_bundle()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- where and how to reach it -------------------------------------------

    @property
    def is_running(self) -> bool:
        """Return whether the server is listening."""
        return self._inbox is not None

    @property
    def port(self) -> int:
        """Return the port the server listens (or, once stopped, listened) on.

        Raises:
            RuntimeError: The server was never started.
        """
        if self._port is None:
            raise RuntimeError("the test SMTP server is not running (call start())")
        return self._port

    @property
    def address(self) -> str:
        """Return ``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def tls_bundle(self) -> TLSBundle | None:
        """Return the certificates in use (``None`` for a plain server)."""
        return self._tls_bundle

    @property
    def sessions_opened(self) -> int:
        """Return how many connections the server has accepted."""
        return len(self.transcripts)

    @property
    def active_sessions(self) -> int:
        """Return how many connections are open now."""
        return sum(1 for s in list(self._sessions) if s.transport is not None)

    def drop_connections(self) -> int:
        """Close every client connection now, as a restart or idle timeout would.

        The server keeps listening. A client holding a pooled connection finds
        it closed on its next send.

        Returns:
            How many connections were closed.
        """
        dropped = 0
        for session in list(self._sessions):
            if session.transport is not None:
                session.transcript.append("S: <connection closed by the server>")
                session.transport.close()
                dropped += 1
        return dropped

    def settings(self, **overrides: Any) -> MailerSettings:
        """Return settings that send to this server, trusting its test CA.

        Host, port, TLS mode, CA file and (with ``auth``) the first user's
        credentials are filled in, with ``from_="sender@example.test"``,
        10-second timeouts (connect, greeting, each command, each message) and
        retries that wait milliseconds, not seconds (still up to
        ``MAILER_MAX_ATTEMPTS``; pass ``max_attempts=1`` to see each failure
        as it happens). Nothing comes from the environment or a ``.env`` file.
        Keywords override any of these.

        Raises:
            ConfigError: An unknown or invalid setting.
        """
        values: dict[str, Any] = {
            "smtp_host": self.host,
            "smtp_port": self.port,
            "smtp_tls": self.tls or "none",
            "from_": DEFAULT_SENDER,
            "timeout": DEFAULT_CLIENT_TIMEOUT,
            "connect_timeout": DEFAULT_CLIENT_TIMEOUT,
            "greeting_timeout": DEFAULT_CLIENT_TIMEOUT,
            "message_timeout": DEFAULT_CLIENT_TIMEOUT,
            "retry_backoff": TEST_RETRY_BACKOFF,
            "retry_max_backoff": TEST_RETRY_BACKOFF * 10,
        }
        if self._tls_bundle is not None:
            values["smtp_ca_file"] = self._tls_bundle.ca_path
        if self.auth:
            username, password = next(iter(self.auth.items()))
            values["smtp_username"] = username
            values["smtp_password"] = password
        values.update(overrides)
        return isolated_settings(**values)

    # -- internals ----------------------------------------------------------

    def _new_session(self, handler: Any, **options: Any) -> FaultySMTP:
        transcript: list[str] = []
        self.transcripts.append(transcript)
        session = FaultySMTP(
            handler,
            plan=self.faults,
            number=next(self._numbers),
            transcript=transcript,
            **options,
        )
        self._sessions.add(session)
        return session

    def _release_bundle(self) -> None:
        if self._owned_bundle is not None:
            self._owned_bundle.cleanup()
            self._owned_bundle = None
            self._tls_bundle = None

    def __repr__(self) -> str:
        where = self.address if self.is_running else "(not running)"
        return f"<SMTPTestServer {where} tls={self.tls} auth={bool(self.auth)}>"
