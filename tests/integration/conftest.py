"""Real SMTP servers for integration tests: aiosmtpd in the test's loop, on 127.0.0.1:0."""

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
from mailer.inbox import Inbox, start_inbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A certificate authority made for this test run."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA's certificate as a PEM file, for MAILER_SMTP_CA_FILE."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for localhost, 127.0.0.1 and ::1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(context)
    return context


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    """A plain SMTP inbox."""
    async with await start_inbox() as server:
        yield server


@pytest.fixture
def settings_for() -> Callable[..., MailerSettings]:
    """Settings pointing at a given inbox."""

    def make(server: Inbox, **overrides: Any) -> MailerSettings:
        values: dict[str, Any] = {
            "_env_file": None,
            "smtp_host": server.host,
            "smtp_port": server.port,
            "smtp_tls": "none",
            "from_": "Example Shop <shop@example.test>",
            "templates_dir": EXAMPLES / "templates",
            "timeout": 5,
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
