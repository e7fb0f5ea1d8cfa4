"""Keep the inbox within bounds: line length, connections, and one log line per trouble.

A development inbox faces whatever a buggy or hostile client sends. Three limits
keep it standing: a line is never buffered past ``MAX_LINE_BYTES`` (aiosmtpd
refuses lines over 1,001 octets, RFC 5321 4.5.3.1.6, but keeps every fragment of
one in memory until its end), connections past a limit get a 421 and are
closed, and a recurring local failure (a full disk, no file descriptors left)
is logged once per interval instead of once per event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger("mailer.inbox")

# Any line longer than 1,001 octets is refused; past this many bytes the rest of
# such a line is dropped before aiosmtpd sees it, so memory stays bounded.
MAX_LINE_BYTES = 8192
DEFAULT_MAX_CONNECTIONS = 50
LOG_INTERVAL = 60.0
TOO_MANY_CONNECTIONS = (
    b"421 4.7.0 mailer inbox: too many connections, try again later\r\n"
)
# What asyncio's accept loop reports when accept() fails for lack of file
# descriptors or memory (it then retries every second, logging each time).
ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"


class ThrottledLog:
    """Log each kind of trouble at most once per interval, counting the rest.

    Args:
        logger: Where the lines go.
        interval: Seconds between two lines about the same trouble.
        clock: A monotonic clock (replaced in tests).
    """

    def __init__(
        self,
        logger: logging.Logger = LOG,
        *,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str) -> bool:
        """Log ``message`` unless trouble ``key`` was logged within the interval.

        Returns:
            Whether the line was logged.
        """
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        skipped = self._suppressed.pop(key, 0)
        suffix = f" ({skipped} more since the last report)" if skipped else ""
        self._logger.warning("%s%s", message, suffix)
        self._last[key] = now
        return True


class LineCap:
    """Cut a line that grows past ``limit`` bytes; the cut line still ends.

    Fed each chunk a connection receives, it returns what to pass on. A line
    over the limit is kept up to the limit (so it is still seen as too long and
    refused) and the rest of it is dropped until its line feed, which is passed
    on as CRLF so the session stays in step.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._length = 0  # bytes of the current line passed on so far
        self._dropping = False

    def feed(self, data: bytes) -> bytes:
        """Return the part of ``data`` to pass on."""
        if self._dropping:
            newline = data.find(b"\n")
            if newline < 0:
                return b""
            self._dropping = False
            self._length = 0
            data = b"\r\n" + data[newline + 1 :]
        last = data.rfind(b"\n")
        if last < 0:
            room = self.limit - self._length
            if len(data) > room:
                self._dropping = True
                self._length = self.limit
                return data[: max(room, 0)]
            self._length += len(data)
            return data
        # A line ending in this chunk is bounded by the chunk's size; only the
        # unfinished tail can grow across chunks.
        tail = len(data) - last - 1
        if tail > self.limit:
            self._dropping = True
            self._length = self.limit
            return data[: last + 1 + self.limit]
        self._length = tail
        return data


class Refusal(asyncio.Protocol):
    """Answer 421 and close: the reply to a connection past the limit."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the 421 and close the connection."""
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(TOO_MANY_CONNECTIONS)
        transport.close()


ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def quiet_accept_errors(
    loop: asyncio.AbstractEventLoop, log: ThrottledLog
) -> ExceptionHandler:
    """Log accept() resource exhaustion once per interval, without a traceback.

    Every other exception goes to the handler that was there before.

    Returns:
        The handler installed (give it to ``restore_exception_handler``).
    """
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_OUT_OF_RESOURCES:
            error = context.get("exception")
            reason = getattr(error, "strerror", None) or str(error)
            log.warning(
                "accept",
                f"inbox: cannot accept connections: {reason}; new connections "
                "wait until some close (logged at most once a minute)",
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handle.previous = previous  # type: ignore[attr-defined]
    loop.set_exception_handler(handle)
    return handle


def restore_exception_handler(
    loop: asyncio.AbstractEventLoop, installed: ExceptionHandler
) -> None:
    """Put back the handler ``quiet_accept_errors`` replaced, if ours is current."""
    if loop.get_exception_handler() is installed:
        loop.set_exception_handler(getattr(installed, "previous", None))
