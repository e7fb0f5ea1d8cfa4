"""Real SMTP servers for integration tests, from mailer's own pytest plugin.

New tests use the plugin's fixtures (``smtp_server`` and its markers,
``smtp_server_factory``, ``smtp_tls``, faults). The fixtures below keep the
older names working for tests written against ``start_inbox`` directly; the
certificates all come from the one test CA of ``smtp_tls``.

Settings come from the one helper, ``make_settings`` (tests/conftest.py):
``settings_for(server_or_port)`` points it at a server, and ``settings_on(port)``
is that with the sender and 2-second timeout the pool and pipelining tests use.
Two numbered-message factories are shared: ``mail(n)`` (pool, pipelining) and
``message(n)`` (delivery, faults). ``scripted_server`` makes ScriptedServers;
``scripted`` is one pipelining ScriptedServer, running for the whole test.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailer import MailerSettings, Message
from mailer.inbox.server import Inbox, start_inbox
from mailer.testing import SMTPTestServer, TLSBundle


@pytest.fixture(scope="session")
def ca(smtp_tls: TLSBundle) -> trustme.CA:
    """The test CA (smtp_tls's)."""
    return smtp_tls.ca


@pytest.fixture(scope="session")
def ca_file(smtp_tls: TLSBundle) -> Path:
    """The test CA's certificate as a PEM file, for MAILER_SMTP_CA_FILE."""
    return smtp_tls.ca_path


@pytest.fixture(scope="session")
def server_tls(smtp_tls: TLSBundle) -> ssl.SSLContext:
    """A server context with a certificate for localhost, 127.0.0.1 and ::1."""
    return smtp_tls.server_context


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    """A plain SMTP inbox (prefer smtp_server, which records more)."""
    async with await start_inbox() as server:
        yield server


def _test_server_settings(server: SMTPTestServer) -> dict[str, Any]:
    """The TLS mode, test CA and credentials SMTPTestServer.settings() would use."""
    settings = server.settings()
    password = settings.smtp_password
    return {
        "smtp_tls": settings.smtp_tls,
        "smtp_ca_file": settings.smtp_ca_file,
        "smtp_username": settings.smtp_username,
        "smtp_password": password.get_secret_value() if password else None,
    }


@pytest.fixture
def settings_for(
    make_settings: Callable[..., MailerSettings],
) -> Callable[..., MailerSettings]:
    """Build make_settings pointed at a server (or a port on 127.0.0.1), timeout 5 s."""

    def make(server: Inbox | SMTPTestServer | int, **overrides: Any) -> MailerSettings:
        if isinstance(server, int):
            host, port = "127.0.0.1", server
        else:
            host, port = server.host, server.port
        values: dict[str, Any] = {
            "smtp_host": host,
            "smtp_port": port,
            "smtp_tls": "none",
            "timeout": 5,
        }
        if isinstance(server, SMTPTestServer):
            values.update(_test_server_settings(server))
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
def settings_on(
    settings_for: Callable[..., MailerSettings],
) -> Callable[..., MailerSettings]:
    """Build settings_for(port) sending as shop@example.test, with a 2 s timeout."""

    def make(port: int, **overrides: Any) -> MailerSettings:
        return settings_for(
            port, **{"from_": "shop@example.test", "timeout": 2, **overrides}
        )

    return make


@pytest.fixture
def mail() -> Callable[..., Message]:
    """Make message n: to u<n>@example.test, subject "n<n>" (fields override)."""

    def make(n: int, **fields: Any) -> Message:
        values: dict[str, Any] = {
            "to": f"u{n}@example.test",
            "subject": f"n{n}",
            "body": f"body {n}\n",
        }
        values.update(fields)
        return Message(**values)

    return make


@pytest.fixture
def message() -> Callable[..., Message]:
    """Make message n: to user<n>@example.test, subject "Message <n>" (fields override)."""

    def make(n: int = 1, **fields: Any) -> Message:
        values: dict[str, Any] = {
            "to": f"user{n}@example.test",
            "subject": f"Message {n}",
            "body": f"Body {n}\n",
        }
        values.update(fields)
        return Message(**values)

    return make


@dataclass
class ScriptedServer:
    """A small SMTP server that answers each read at once and records what came in.

    Every command found in one read of the socket is answered in one write, as a
    pipelining server may; ``reads`` keeps the commands seen per read, so a test
    can tell a grouped conversation from a one-command-at-a-time one.

    ``answer(command_line)`` may replace a reply ("<content>" stands for the end
    of a message's content): None keeps the default reply, "" sends nothing (the
    client will time out), "<close>" drops the connection there and then.
    """

    pipelining: bool = True
    answer: Callable[[str], str | None] = lambda line: None
    reads: list[list[str]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    sessions: int = 0
    quits: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def port(self) -> int:
        """Return the port the OS picked."""
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def drop_all(self) -> None:
        """Close every open session from the server's side (an idle timeout)."""
        for writer in self.writers:
            writer.close()

    def _reply(self, command: str, default: str) -> str:
        reply = self.answer(command)
        return default if reply is None else reply

    def _default(self, verb: str, accepted: int) -> str:
        if verb == "EHLO":
            lines = ["scripted", "8BITMIME", "SIZE 1000000"]
            if self.pipelining:
                lines.append("PIPELINING")
            return "\r\n".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{text}"
                for i, text in enumerate(lines)
            )
        if verb == "DATA":
            return "354 go ahead" if accepted else "554 5.5.1 no valid recipients"
        return {"QUIT": "221 bye"}.get(verb, "250 2.0.0 ok")

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sessions += 1
        self.writers.append(writer)
        writer.write(b"220 scripted ready\r\n")
        buffer = b""
        in_content = False
        accepted = 0  # recipients accepted in the current transaction
        try:
            while chunk := await reader.read(65536):
                buffer += chunk
                seen: list[str] = []
                out: list[str] = []
                while True:
                    verb = "<content>"
                    if in_content:
                        # The content ends at a line holding only "."; it
                        # may be the first line (an empty message).
                        if buffer.startswith(b".\r\n"):
                            body_end = 0
                        else:
                            body_end = buffer.find(b"\r\n.\r\n") + 2
                            if body_end < 2:
                                break
                        self.messages.append(buffer[:body_end])
                        buffer = buffer[body_end + 3 :]
                        in_content, accepted = False, 0
                        reply = self._reply(verb, "250 2.0.0 queued")
                    else:
                        line, sep, rest = buffer.partition(b"\r\n")
                        if not sep:
                            break
                        buffer = rest
                        text = line.decode("utf-8")
                        verb = text.split(" ")[0].split(":")[0].upper()
                        reply = self._reply(text, self._default(verb, accepted))
                        if verb in ("MAIL", "RSET"):
                            accepted = 0
                        accepted += verb == "RCPT" and reply.startswith("25")
                        in_content = verb == "DATA" and reply.startswith("354")
                    seen.append(verb)
                    if reply == "<close>":
                        self.reads.append(seen)
                        return
                    if reply:
                        out.append(reply)
                    if verb == "QUIT":
                        self.quits += 1
                        break
                self.reads.append(seen)
                writer.write("".join(r + "\r\n" for r in out).encode())
                if seen and seen[-1] == "QUIT":
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.fixture
def scripted_server() -> Callable[..., ScriptedServer]:
    """Make ScriptedServers (``async with scripted_server(pipelining=False) as s``)."""
    return ScriptedServer


@pytest.fixture
async def scripted(
    scripted_server: Callable[..., ScriptedServer],
) -> AsyncIterator[ScriptedServer]:
    """A pipelining scripted server, started for the test and stopped after it."""
    async with scripted_server() as server:
        yield server
