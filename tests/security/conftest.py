"""Security tests: a server that records what the client dared to send, and test certificates.

Marking: tests here that open sockets say so with ``pytestmark =
pytest.mark.integration`` in their module (tests/conftest.py only marks
tests/integration by path). So that the mark cannot be forgotten, every other
test in this folder runs with ``connect`` and ``bind`` disabled: a socket use
there fails loudly instead of sneaking into ``make unit``.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    LoginPassword,
    Session,
)
from aiosmtpd.smtp import Envelope as ServerEnvelope

from mailer import MailerSettings
from mailer.inbox import InboxHandler


@pytest.fixture(autouse=True)
def _sockets_only_when_marked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail any unmarked test here that connects or listens."""
    if request.node.get_closest_marker("integration") is not None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(
            "this test opens a socket: put `pytestmark = pytest.mark.integration` "
            "in its module"
        )

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "bind", refuse)


class WatchingHandler(InboxHandler):
    """Record each command that matters (EHLO, AUTH, MAIL, RCPT, DATA), in order.

    With ``hide_starttls`` the EHLO reply loses its STARTTLS line while the
    server still has a certificate: what a downgrading attacker in the middle
    does to a client.
    """

    def __init__(self, *, hide_starttls: bool = False) -> None:
        super().__init__()
        self.hide_starttls = hide_starttls
        self.commands: list[str] = []
        self.ehlo_names: list[str] = []
        self.mail_options: list[list[str]] = []
        self.tls_at_mail: list[bool] = []

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: ServerEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # the five-argument hook must set it
        self.commands.append("EHLO")
        self.ehlo_names.append(hostname)
        if self.hide_starttls:
            return [line for line in responses if line != "250-STARTTLS"]
        return responses

    async def handle_AUTH(  # noqa: N802
        self, server: SMTP, session: Session, envelope: ServerEnvelope, args: list[str]
    ) -> object:
        self.commands.append("AUTH")
        return MISSING

    async def handle_MAIL(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: ServerEnvelope,
        address: str,
        options: list[str],
    ) -> object:
        self.commands.append("MAIL")
        self.mail_options.append(list(options))
        transport = server.transport
        self.tls_at_mail.append(
            transport is not None and transport.get_extra_info("ssl_object") is not None
        )
        return MISSING

    async def handle_RCPT(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: ServerEnvelope,
        address: str,
        options: list[str],
    ) -> object:
        self.commands.append("RCPT")
        return MISSING

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: ServerEnvelope
    ) -> str:
        self.commands.append("DATA")
        return await super().handle_DATA(server, session, envelope)


@dataclass
class WatchedServer:
    """A running server: where it listens and what it saw."""

    host: str
    port: int
    handler: WatchingHandler
    sessions: list[SMTP] = field(default_factory=list)

    @property
    def address(self) -> str:
        """Return ``host:port``."""
        return f"{self.host}:{self.port}"


def _authenticator(users: Mapping[str, str], reply: str | None) -> Callable[..., Any]:
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
            if users.get(login) == password:
                return AuthResult(success=True, auth_data=login)
            if reply is not None:
                # A careless server that echoes what it was sent.
                echoed = reply.format(password=password, login=login)
                return AuthResult(success=False, handled=False, message=echoed)
        return AuthResult(success=False, handled=False)

    return authenticate


WatchedServerFactory = Callable[..., AbstractAsyncContextManager[WatchedServer]]


@pytest.fixture
def watched_server() -> WatchedServerFactory:
    """Start an aiosmtpd server on 127.0.0.1:0 that records what the client sends.

    Keywords: ``tls`` (None, "starttls" or "tls") with ``context``; ``auth``
    ({user: password}); ``auth_in_clear`` to offer AUTH before TLS, as a badly
    configured server would; ``auth_reply`` to answer a failed login with it (``{password}`` is replaced
    by the password the client sent);
    ``hide_starttls``; ``smtputf8``; ``size_limit`` (0: no SIZE).
    """

    @asynccontextmanager
    async def serve(
        *,
        tls: str | None = None,
        context: ssl.SSLContext | None = None,
        auth: Mapping[str, str] | None = None,
        auth_in_clear: bool = False,
        auth_reply: str | None = None,
        hide_starttls: bool = False,
        smtputf8: bool = True,
        size_limit: int = 33_554_432,
    ) -> AsyncIterator[WatchedServer]:
        loop = asyncio.get_running_loop()
        handler = WatchingHandler(hide_starttls=hide_starttls)
        sessions: list[SMTP] = []

        def new_session() -> SMTP:
            protocol = SMTP(
                handler,
                hostname="localhost",
                tls_context=context if tls == "starttls" else None,
                auth_require_tls=not auth_in_clear and tls != "tls",
                authenticator=_authenticator(auth or {}, auth_reply),
                enable_SMTPUTF8=smtputf8,
                data_size_limit=size_limit,
                loop=loop,
            )
            sessions.append(protocol)
            return protocol

        server = await loop.create_server(
            new_session,
            host="127.0.0.1",
            port=0,
            ssl=context if tls == "tls" else None,
        )
        watched = WatchedServer(
            "127.0.0.1", server.sockets[0].getsockname()[1], handler, sessions
        )
        try:
            yield watched
        finally:
            server.close()
            for protocol in sessions:
                if protocol.transport is not None:
                    protocol.transport.close()
            await server.wait_closed()

    return serve


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A certificate authority made for this test run."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA as a PEM file, for MAILER_SMTP_CA_FILE."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


ServerContextFactory = Callable[..., ssl.SSLContext]


@pytest.fixture(scope="session")
def server_context(
    ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> ServerContextFactory:
    """Make server SSLContexts: good, expired, for another host, or self-signed."""

    def make(
        *names: str,
        expired: bool = False,
        self_signed: bool = False,
        issuer: trustme.CA | None = None,
        max_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if self_signed:
            # A CA's own certificate is self-signed; no client here trusts it.
            own = trustme.CA()
            folder = tmp_path_factory.mktemp("self-signed")
            own.cert_pem.write_to_path(str(folder / "cert.pem"))
            own.private_key_pem.write_to_path(str(folder / "key.pem"))
            context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        else:
            not_after = None
            not_before = None
            if expired:
                not_after = datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC)
                not_before = not_after - datetime.timedelta(days=90)
            (issuer or ca).issue_cert(
                *(names or ("localhost", "127.0.0.1")),
                not_before=not_before,
                not_after=not_after,
            ).configure_cert(context)
        if max_version is not None:
            context.maximum_version = max_version
        return context

    return make


@pytest.fixture
def settings_for(ca_file: Path) -> Callable[..., MailerSettings]:
    """Settings pointing at a watched server (plain, the test CA trusted)."""

    def make(server: WatchedServer, **overrides: Any) -> MailerSettings:
        values: dict[str, Any] = {
            "_env_file": None,
            "smtp_host": server.host,
            "smtp_port": server.port,
            "smtp_tls": "none",
            "smtp_ca_file": ca_file,
            "from_": "Shop <shop@example.test>",
            "timeout": 5,
        }
        values.update(overrides)
        return MailerSettings(**values)

    return make


@pytest.fixture
def remote_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the client treat 127.0.0.1 as a remote host.

    Our servers may only listen on loopback, and loopback is exempt from the
    rule "no password in clear": this seam lets a test check the rule itself.
    """
    import mailer.transports.login

    monkeypatch.setattr(mailer.transports.login, "is_loopback", lambda host: False)
    return
