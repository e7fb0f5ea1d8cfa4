"""The TCP connect has its own time limit, separate from the greeting's."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from mailer import ConnectError, DeliveryTimeoutError
from mailer.transports.smtp.sockets import open_socket


async def test_a_connect_that_hangs_costs_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No SYN-ACK ever (a firewall dropping packets): DeliveryTimeoutError at the limit."""
    loop = asyncio.get_running_loop()
    opened: list[socket.socket] = []

    async def never(sock: socket.socket, address: object) -> None:
        opened.append(sock)
        await asyncio.sleep(60)

    monkeypatch.setattr(loop, "sock_connect", never)
    started = time.monotonic()
    with pytest.raises(
        DeliveryTimeoutError, match="timed out connecting to 127.0.0.1:25"
    ):
        await open_socket("127.0.0.1", 25, limit=0.2)
    assert 0.15 < time.monotonic() - started < 1.0
    assert opened
    assert all(sock.fileno() == -1 for sock in opened)  # closed, not leaked


async def test_every_address_refused_is_a_transient_connect_error() -> None:
    """A closed port: ConnectError naming the server and the reason."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        ConnectError, match=f"cannot reach 127.0.0.1:{port}: "
    ) as caught:
        await open_socket("127.0.0.1", port, limit=2)
    assert caught.value.transient is True


async def test_a_name_that_does_not_resolve_is_a_connect_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Name resolution fails: ConnectError with the resolver's reason, not an OSError."""
    loop = asyncio.get_running_loop()

    async def no_such_name(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", no_such_name)
    with pytest.raises(
        ConnectError,
        match="cannot reach smtp.example.test:25: Name or service not known",
    ):
        await open_socket("smtp.example.test", 25, limit=5)


async def test_an_ip_literal_is_connected_without_a_resolver_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """127.0.0.1 (or ::1) needs no getaddrinfo in a thread; a host name still gets it."""
    loop = asyncio.get_running_loop()
    asked: list[object] = []
    resolve = loop.getaddrinfo

    async def counted(host: str, *args: object, **kwargs: object) -> object:
        asked.append(host)
        return await resolve(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", counted)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        sock = await open_socket("127.0.0.1", port, limit=5)
        assert sock.getpeername() == ("127.0.0.1", port)
        sock.close()
        assert asked == []
        sock = await open_socket("localhost", port, limit=5)
        sock.close()
    assert asked == ["localhost"]
