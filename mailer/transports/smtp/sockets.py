"""Open the TCP connection to an SMTP server within its own connect timeout.

aiosmtplib applies one timeout to the TCP connect and to the server's greeting.
Connecting here first, and handing aiosmtplib the connected socket, lets the two
have separate limits: a host that does not answer SYNs costs the connect
timeout, and a server that accepts and never greets costs the greeting timeout.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

from mailer.exceptions import ConnectError, DeliveryTimeoutError

# What socket.getaddrinfo returns for one address.
_AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


async def open_socket(host: str, port: int, *, limit: float) -> socket.socket:
    """Connect to ``host:port`` (each address it resolves to, in turn).

    Args:
        host: Host name or IP address.
        port: TCP port.
        limit: Seconds for resolving and connecting, all addresses together.

    Returns:
        A connected, non-blocking socket; the caller owns it.

    Raises:
        DeliveryTimeoutError: Not connected within ``limit`` (transient).
        ConnectError: Every address refused or was unreachable (transient).
    """
    server = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limit):
            addresses = _numeric(host, port) or await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            last_error: OSError | None = None
            for family, kind, proto, _, address in addresses:
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, address)
                except OSError as exc:
                    sock.close()
                    last_error = exc
                except BaseException:
                    sock.close()
                    raise
                else:
                    return sock
    except TimeoutError:
        raise DeliveryTimeoutError(
            f"timed out connecting to {server} within {limit:g} s "
            "(MAILER_CONNECT_TIMEOUT)",
            transient=True,
        ) from None
    except OSError as exc:  # name resolution failed
        raise ConnectError(
            f"cannot reach {server}: {exc.strerror or exc}", transient=True
        ) from exc
    reason = (last_error.strerror or str(last_error)) if last_error else "no address"
    raise ConnectError(f"cannot reach {server}: {reason}", transient=True) from (
        last_error
    )


def _numeric(host: str, port: int) -> Sequence[_AddressInfo]:
    """Return the address of an IP literal at once, or [] for a host name.

    ``loop.getaddrinfo`` runs in a thread even for ``127.0.0.1``; a pool that
    reconnects every ``MAILER_POOL_MAX_MESSAGES`` paid that hop each time.
    ``AI_NUMERICHOST`` never asks a resolver: it answers or refuses at once.
    """
    try:
        return socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
    except (socket.gaierror, UnicodeError):
        return []
