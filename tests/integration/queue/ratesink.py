"""A loopback SMTP sink that stamps each MAIL by the client's EHLO name (queue tests)."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

EHLO = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 33554432\r\n"


def busiest_window(times: list[float], period: float = 1.0) -> int:
    """Return the most timestamps in any half-open window of ``period`` seconds."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + period) - i for i, t in enumerate(ordered)),
        default=0,
    )


def mean_rate(times: list[float]) -> float:
    """Return the starts per second from the first to the last."""
    ordered = sorted(times)
    if len(ordered) < 2:
        return 0.0
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


@dataclass
class StampingSink:
    """Answer pipelined SMTP at once; stamp every MAIL with the monotonic clock.

    ``refuse(name, mails)`` is asked at each MAIL (the client's EHLO name, the
    MAILs seen so far, this one included): True answers 421 "4.7.0 rate limit
    exceeded" and closes the session, as a throttling provider does.
    """

    refuse: Callable[[str, int], bool] = lambda name, mails: False
    stamps: dict[str, list[float]] = field(default_factory=dict)
    refused: list[tuple[str, float]] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    mails: int = 0
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """Return the port the OS picked."""
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def accepted(self) -> list[float]:
        """Return the stamps of the MAILs not refused, of every client, in order."""
        return sorted(t for times in self.stamps.values() for t in times)

    async def __aenter__(self) -> StampingSink:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"220 sink ready\r\n")
        buffer = b""
        in_content = False
        name = "?"
        try:
            while chunk := await reader.read(262144):
                now = time.monotonic()
                buffer += chunk
                out: list[bytes] = []
                close = False
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
                        in_content = False
                        out.append(b"250 2.0.0 queued\r\n")
                        continue
                    line, sep, buffer = buffer.partition(b"\r\n")
                    if not sep:
                        buffer = line
                        break
                    verb = line[:4].upper()
                    if verb == b"MAIL":
                        self.mails += 1
                        if self.refuse(name, self.mails):
                            self.refused.append((name, now))
                            out.append(b"421 4.7.0 rate limit exceeded\r\n")
                            close = True
                            break
                        self.stamps.setdefault(name, []).append(now)
                        out.append(b"250 2.1.0 ok\r\n")
                    elif verb == b"RCPT":
                        self.recipients.append(line.decode().split(":", 1)[1].strip())
                        out.append(b"250 2.1.5 ok\r\n")
                    elif verb in (b"EHLO", b"HELO"):
                        name = line[5:].decode().strip()
                        out.append(EHLO)
                    elif verb == b"DATA":
                        in_content = True
                        out.append(b"354 go ahead\r\n")
                    elif verb == b"QUIT":
                        out.append(b"221 bye\r\n")
                        close = True
                        break
                    else:
                        out.append(b"250 ok\r\n")
                writer.write(b"".join(out))
                if close:
                    await writer.drain()
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()
