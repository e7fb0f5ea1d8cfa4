"""A loopback SMTP sink for large messages, in its own process (content benchmarks).

Like sinks.py's ``fast`` kind (every command in a read is answered at once),
but it looks for the end of a message only in the bytes that just arrived, so
multi-megabyte messages cost the sink linear time and the client stays the
bottleneck. It counts messages and content bytes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.sharedctypes import Synchronized

from sinks import _reply_for

HOST = "127.0.0.1"


async def _session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    messages: Synchronized[int],
    octets: Synchronized[int],
) -> None:
    writer.write(b"220 sink ready\r\n")
    buffer = bytearray()
    in_content = has_recipient = False
    scanned = 0
    try:
        while chunk := await reader.read(1 << 20):
            buffer += chunk
            out: list[bytes] = []
            closing = False
            while True:
                if in_content:
                    end = buffer.find(b"\r\n.\r\n", max(scanned - 4, 0))
                    if buffer.startswith(b".\r\n"):
                        end = -2
                    if end == -1:
                        scanned = len(buffer)
                        break
                    with octets.get_lock():
                        octets.value += end + 2
                    with messages.get_lock():
                        messages.value += 1
                    del buffer[: end + 5]
                    scanned = 0
                    in_content = has_recipient = False
                    out.append(b"250 2.0.0 queued\r\n")
                    continue
                index = buffer.find(b"\r\n")
                if index < 0:
                    break
                line = bytes(buffer[:index])
                del buffer[: index + 2]
                verb = line[:4].upper()
                out.append(_reply_for(line, has_recipient))
                if verb in (b"MAIL", b"RSET"):
                    has_recipient = False
                elif verb == b"RCPT":
                    has_recipient = True
                elif verb == b"DATA":
                    in_content = has_recipient
                    scanned = 0
                elif verb == b"QUIT":
                    closing = True
                    break
            if out:
                writer.write(b"".join(out))
            if closing:
                return
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _serve(
    messages: Synchronized[int],
    octets: Synchronized[int],
    ports: multiprocessing.Queue[int],
) -> None:
    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _session(r, w, messages, octets)

    server = await asyncio.start_server(on_client, HOST, 0)
    ports.put(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def serve(
    messages: Synchronized[int],
    octets: Synchronized[int],
    ports: multiprocessing.Queue[int],
) -> None:
    """Run the sink until the process is terminated."""
    asyncio.run(_serve(messages, octets, ports))


class ContentSink:
    """The sink in a child process: ``port``, ``messages`` and ``octets`` received."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._messages: Synchronized[int] = context.Value("q", 0)  # type: ignore[assignment]
        self._octets: Synchronized[int] = context.Value("q", 0)  # type: ignore[assignment]
        ports: multiprocessing.Queue[int] = context.Queue()
        self._process = context.Process(
            target=serve, args=(self._messages, self._octets, ports), daemon=True
        )
        self._process.start()
        self.port: int = ports.get(timeout=30)

    @property
    def messages(self) -> int:
        return int(self._messages.value)

    @property
    def octets(self) -> int:
        return int(self._octets.value)

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(5)
