"""SMTP sinks for the benchmarks, each run in its own process on 127.0.0.1.

Kinds:
  aiosmtpd  aiosmtpd's SMTP server with a handler that only counts; it offers
            PIPELINING (aiosmtpd reads commands as a stream, so it copes).
  fast      a minimal sink: every command in a read is answered at once.
  link      models a network round trip: each reply leaves DELAY seconds after
            its command arrived, and commands sent together are read together
            (so pipelined commands share one round trip, as over a real link).
  serial    a slow server: commands are handled one at a time, and the replies
            to MAIL, RCPT and the end of the content each take DELAY seconds
            (DATA's 354 is immediate): pipelining cannot help here.
  c         the minimal sink written in C (csink.c, built here with the
            system's C compiler into a temporary folder): it answers like
            "fast" and costs the machine a fraction of what a Python sink
            does, so that on 2 cores the client is what the figures measure.

Each sink counts the messages it accepted in a shared counter, so the
benchmark can tell delivered, failed and lost messages apart, and the
connections it accepted in another. Every sink refuses a recipient whose
address starts with "refused" (550 5.1.1), for the refusal benchmark. Sockets
listen with asyncio's default backlog (100), as aiosmtpd's own Controller does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mmap
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import struct
import subprocess
import tempfile
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
EHLO_LINES = ["sink", "PIPELINING", "8BITMIME", "SIZE 33554432", "SMTPUTF8"]
EHLO_REPLY = (
    "\r\n".join(
        f"250{'-' if i < len(EHLO_LINES) - 1 else ' '}{line}"
        for i, line in enumerate(EHLO_LINES)
    )
    + "\r\n"
).encode()


class _Counter:
    def __init__(self, shared: Synchronized[int]) -> None:
        self.shared = shared

    def add(self) -> None:
        with self.shared.get_lock():
            self.shared.value += 1


REFUSED = b"550 5.1.1 no such user\r\n"


def _is_refused(line: bytes) -> bool:
    return line[:4].upper() == b"RCPT" and b"<refused" in line.lower()


def _reply_for(line: bytes, has_recipient: bool) -> bytes:
    verb = line[:4].upper()
    if _is_refused(line):
        return REFUSED
    if verb in (b"EHLO", b"HELO"):
        return EHLO_REPLY if verb == b"EHLO" else b"250 sink\r\n"
    if verb == b"DATA":
        return b"354 go ahead\r\n" if has_recipient else b"554 no recipients\r\n"
    if verb == b"QUIT":
        return b"221 bye\r\n"
    return b"250 2.0.0 ok\r\n"


async def _grouped_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    counter: _Counter,
    delay: float,
) -> None:
    """Answer every command of a read together, ``delay`` s after it arrived."""
    loop = asyncio.get_running_loop()
    writer.write(b"220 sink ready\r\n")
    buffer = b""
    in_content = has_recipient = False
    try:
        while chunk := await reader.read(262144):
            arrived = loop.time()
            buffer += chunk
            out: list[bytes] = []
            closing = False
            while True:
                if in_content:
                    if buffer.startswith(b".\r\n"):
                        end = 0
                    else:
                        end = buffer.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        end += 2
                    buffer = buffer[end + 3 :]
                    in_content = has_recipient = False
                    counter.add()
                    out.append(b"250 2.0.0 queued\r\n")
                    continue
                line, sep, rest = buffer.partition(b"\r\n")
                if not sep:
                    break
                buffer = rest
                reply = _reply_for(line, has_recipient)
                verb = line[:4].upper()
                if verb in (b"MAIL", b"RSET"):
                    has_recipient = False
                elif verb == b"RCPT":
                    has_recipient = has_recipient or reply != REFUSED
                elif verb == b"DATA":
                    in_content = has_recipient
                out.append(reply)
                if verb == b"QUIT":
                    closing = True
                    break
            if out:
                data = b"".join(out)
                if delay:
                    loop.call_at(arrived + delay, _write, writer, data, closing)
                else:
                    _write(writer, data, closing)
            if closing:
                if delay:
                    await asyncio.sleep(delay * 1.5)
                return
    except ConnectionError:
        pass
    finally:
        writer.close()


def _write(writer: asyncio.StreamWriter, data: bytes, closing: bool) -> None:
    if not writer.is_closing():
        writer.write(data)
        if closing:
            writer.close()


async def _serial_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    counter: _Counter,
    delay: float,
) -> None:
    """Handle one command at a time; MAIL, RCPT and end-of-data take ``delay``."""
    writer.write(b"220 sink ready\r\n")
    has_recipient = False
    try:
        while line := await reader.readline():
            line = line.rstrip(b"\r\n")
            verb = line[:4].upper()
            reply = _reply_for(line, has_recipient)
            if verb in (b"MAIL", b"RCPT"):
                accepted = verb == b"RCPT" and reply != REFUSED
                has_recipient = accepted or (verb == b"RCPT" and has_recipient)
                await asyncio.sleep(delay)
            writer.write(reply)
            if verb == b"DATA" and has_recipient:
                while (content_line := await reader.readline()) != b".\r\n":
                    if not content_line:
                        return
                has_recipient = False
                counter.add()
                await asyncio.sleep(delay)
                writer.write(b"250 2.0.0 queued\r\n")
            if verb == b"QUIT":
                await writer.drain()
                return
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _aiosmtpd_server(counter: _Counter, connections: _Counter) -> asyncio.Server:
    from aiosmtpd.smtp import SMTP

    class CountingHandler:
        async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
            self,
            server: Any,
            session: Any,
            envelope: Any,
            hostname: str,
            responses: list[str],
        ) -> list[str]:
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
            self,
            server: Any,
            session: Any,
            envelope: Any,
            address: str,
            rcpt_options: list[str],
        ) -> str:
            if address.lower().startswith("refused"):
                return REFUSED.decode().strip()
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: Any, session: Any, envelope: Any
        ) -> str:
            counter.add()
            return "250 2.0.0 queued"

    handler = CountingHandler()
    loop = asyncio.get_running_loop()
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    def session() -> SMTP:
        connections.add()
        return SMTP(handler, hostname="localhost", enable_SMTPUTF8=True, loop=loop)

    return await loop.create_server(session, host=HOST, port=0)


async def _serve(
    kind: str,
    delay: float,
    counter: _Counter,
    ports: multiprocessing.Queue[int],
    connections: _Counter,
) -> None:
    if kind == "aiosmtpd":
        server = await _aiosmtpd_server(counter, connections)
    else:
        session = _serial_session if kind == "serial" else _grouped_session
        pause = 0.0 if kind == "fast" else delay

        async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            connections.add()
            await session(r, w, counter, pause)

        server = await asyncio.start_server(on_client, HOST, 0)
    ports.put(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def serve(
    kind: str,
    delay: float,
    shared: Synchronized[int],
    ports: multiprocessing.Queue[int],
    connections: Synchronized[int],
) -> None:
    """Run a sink until the process is terminated (the target of a Process)."""
    asyncio.run(_serve(kind, delay, _Counter(shared), ports, _Counter(connections)))


C_SOURCE = Path(__file__).with_name("csink.c")


def build_c_sink() -> Path:
    """Compile csink.c once per source version (in the temporary folder); return it.

    Raises:
        RuntimeError: No C compiler, or the build failed.
    """
    source = C_SOURCE.read_bytes()
    folder = Path(tempfile.gettempdir()) / "mailer-bench-csink"
    folder.mkdir(exist_ok=True)
    binary = folder / f"csink-{hashlib.sha256(source).hexdigest()[:12]}"
    if binary.exists():
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the C sink needs a C compiler (cc or gcc)")
    building = binary.with_suffix(".tmp")
    subprocess.run(
        [compiler, "-O2", "-o", str(building), str(C_SOURCE)],
        check=True,
        capture_output=True,
    )
    building.replace(binary)
    return binary


class _CSink:
    """The C sink in a child process; its counters in a shared 16-byte file."""

    def __init__(self) -> None:
        binary = build_c_sink()
        self._counters_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open
            prefix="csink-", suffix=".counters"
        )
        self._counters_file.write(bytes(16))
        self._counters_file.flush()
        self._map = mmap.mmap(self._counters_file.fileno(), 16)
        self._process = subprocess.Popen(
            [str(binary), self._counters_file.name],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.port = int(self._process.stdout.readline())
        self.pid = self._process.pid

    def counts(self) -> tuple[int, int]:
        delivered, connections = struct.unpack("qq", self._map[:16])
        return delivered, connections

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(5)
        self._map.close()
        self._counters_file.close()


class Sink:
    """A sink in a child process: ``port``, ``delivered`` and ``connections`` counts."""

    def __init__(self, kind: str, delay: float = 0.02) -> None:
        self.kind = kind
        self.delay = delay
        self._c: _CSink | None = None
        if kind == "c":
            self._c = _CSink()
            self.port: int = self._c.port
            self.pid: int = self._c.pid
            return
        context = multiprocessing.get_context("spawn")
        self._count: Synchronized[int] = context.Value("q", 0)  # type: ignore[assignment]
        self._connections: Synchronized[int] = context.Value("q", 0)  # type: ignore[assignment]
        ports: multiprocessing.Queue[int] = context.Queue()
        self._process = context.Process(
            target=serve,
            args=(kind, delay, self._count, ports, self._connections),
            daemon=True,
        )
        self._process.start()
        self.port = ports.get(timeout=30)
        assert self._process.pid is not None
        self.pid = self._process.pid

    @property
    def delivered(self) -> int:
        """Return how many messages the sink has accepted so far."""
        if self._c is not None:
            return self._c.counts()[0]
        return int(self._count.value)

    @property
    def connections(self) -> int:
        """Return how many connections the sink has accepted so far."""
        if self._c is not None:
            return self._c.counts()[1]
        return int(self._connections.value)

    def cpu_seconds(self) -> float:
        """Return the CPU time the sink process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        """Terminate the sink process."""
        if self._c is not None:
            self._c.stop()
            return
        self._process.terminate()
        self._process.join(5)
