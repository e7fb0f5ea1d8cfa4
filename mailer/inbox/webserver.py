"""Serve the web inbox with uvicorn in the running event loop, beside the SMTP server.

uvicorn's ``Server.serve()`` is used as documented, with two changes: the
listening socket is bound here (loopback only, port 0 allowed, the port known
before serving starts), and uvicorn does not install signal handlers of its
own, because the caller's handlers (``mailer inbox``'s, or a test's) decide when
to stop. Stopping closes the event streams first, so no open page holds the
shutdown up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from mailer.config.settings import is_loopback
from mailer.transports.base import AsyncCloseable

DEFAULT_HTTP_PORT = 8025
# Connections at once; uvicorn answers 503 past it.
MAX_HTTP_CONNECTIONS = 100
# Open pages' event streams are ended at shutdown; anything else gets this long.
SHUTDOWN_GRACE = 3


class _OwnSignals(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its caller."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving, then say so."""
        await super().startup(sockets=sockets)
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing: the caller owns SIGINT and SIGTERM."""
        yield


class WebServer(AsyncCloseable):
    """A running web server: its address, and ``aclose()`` to stop it."""

    def __init__(
        self, server: uvicorn.Server, task: asyncio.Task[None], host: str, port: int
    ) -> None:
        self._server = server
        self._task = task
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Return the base URL (``http://127.0.0.1:8025``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def aclose(self) -> None:
        """Stop serving: end the streams, then let the open requests finish."""
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), SHUTDOWN_GRACE * 2)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def bind(host: str, port: int) -> socket.socket:
    """Return a listening TCP socket on a loopback ``host``.

    Raises:
        ValueError: ``host`` is not loopback.
        OSError: The port is taken (or not allowed).
    """
    if not is_loopback(host):
        raise ValueError(f"the web inbox only listens on loopback, not {host!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say
    # TCP, and without it every keep-alive response waits 40 ms (Nagle and
    # delayed ACKs) between its headers and its body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_web(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> WebServer:
    """Start serving ``app`` on ``host:port`` (port 0: one the OS picks).

    Raises:
        ValueError: ``host`` is not loopback.
        OSError: The port is taken.
    """
    sock = bind(host, port)
    config = uvicorn.Config(
        app,
        lifespan="on",
        http="h11",
        ws="none",
        log_config=None,  # the caller's logging, not uvicorn's
        log_level=logging.WARNING,
        access_log=False,
        server_header=False,
        limit_concurrency=MAX_HTTP_CONNECTIONS,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    server = _OwnSignals(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # Wait until it serves (or failed to start) before handing it over.
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task.done():
        sock.close()
        task.result()  # raises what stopped it
        raise OSError("the web server stopped at start-up")
    return WebServer(server, task, host, sock.getsockname()[1])
