"""Security tests: a test server that shows what the client dared to send, and certificates.

Marking: tests here that open sockets say so with ``pytestmark =
pytest.mark.integration`` in their module (tests/conftest.py only marks
tests/integration by path). So that the mark cannot be forgotten, every other
test in this folder runs with ``connect`` and ``bind`` disabled: a socket use
there fails loudly instead of sneaking into ``make unit``.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailer.testing.server.protocol import FaultySMTP
from mailer.testing.server.server import SMTPTestServer
from mailer.testing.tls import TLSBundle


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


class WatchedServer(SMTPTestServer):
    """The toolkit's SMTPTestServer, plus the commands the client sent, in order.

    ``auth_in_clear`` makes it a misconfigured server that offers AUTH before
    TLS, which a careless client would use to send the password in clear.
    SMTPTestServer rightly refuses to be one, so this switches off aiosmtpd's
    own check per session (as ``mailer.inbox.server`` does for implicit TLS).
    """

    def __init__(self, *, auth_in_clear: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.auth_in_clear = auth_in_clear

    @property
    def commands(self) -> list[str]:
        """Return the SMTP verbs the client sent, across every session."""
        verbs = []
        for transcript in self.transcripts:
            for line in transcript:
                if line.startswith("C: ") and line[3:4].isalpha():
                    verbs.append(line[3:].split(" ", 1)[0])
        return verbs

    def _new_session(self, handler: Any, **options: Any) -> FaultySMTP:
        session = super()._new_session(handler, **options)
        if self.auth_in_clear:
            session._auth_require_tls = False
        return session


WatchedServerFactory = Callable[..., WatchedServer]


@pytest.fixture
def watched_server(ca: trustme.CA, ca_file: Path) -> WatchedServerFactory:
    """Make a WatchedServer (use it with ``async with``).

    ``context=`` gives the server that SSLContext (an expired certificate, one
    for another host...) while clients still trust the session's test CA.
    """

    def make(*, context: ssl.SSLContext | None = None, **options: Any) -> WatchedServer:
        if context is not None:
            client = ssl.create_default_context(cafile=str(ca_file))
            options["tls_bundle"] = TLSBundle(ca, context, client, ca_file)
        return WatchedServer(**options)

    return make


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
def remote_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the client treat 127.0.0.1 as a remote host.

    Our servers may only listen on loopback, and loopback is exempt from the
    rule "no password in clear": this seam lets a test check the rule itself.
    """
    import mailer.transports.smtp.login

    monkeypatch.setattr(mailer.transports.smtp.login, "is_loopback", lambda host: False)
    return
