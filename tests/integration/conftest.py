"""Real SMTP servers for integration tests, from mailer's own pytest plugin.

New tests use the plugin's fixtures (``smtp_server`` and its markers,
``smtp_server_factory``, ``smtp_tls``, faults). The fixtures below keep the
older names working for tests written against ``start_inbox`` directly; the
certificates all come from the one test CA of ``smtp_tls``.
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

from mailer import MailerSettings
from mailer.inbox.server import Inbox, start_inbox
from mailer.testing import SMTPTestServer, TLSBundle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
def settings_for() -> Callable[..., MailerSettings]:
    """Settings pointing at a given server, sending as the example shop."""

    def make(server: Inbox | SMTPTestServer, **overrides: Any) -> MailerSettings:
        if isinstance(server, SMTPTestServer):
            overrides = {**_test_server_settings(server), **overrides}
        values: dict[str, Any] = {
            "_env_file": None,
            "smtp_host": server.host,
            "smtp_port": server.port,
            "smtp_tls": "none",
            "from_": "Example Shop <shop@example.test>",
            "templates_dir": EXAMPLES / "templates",
            "timeout": 5,
            # Retries stay on, as in production, but wait milliseconds.
            "retry_backoff": 0.001,
            "retry_max_backoff": 0.005,
        }
        values.update(overrides)
        return MailerSettings(**values)

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
