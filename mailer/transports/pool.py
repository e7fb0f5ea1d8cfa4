"""Keep up to N SMTP connections open and lend them out one transaction at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from mailer.transports.connection import SMTPConnection


class ConnectionPool:
    """A bounded set of reusable SMTP connections, opened lazily.

    A connection goes back to the pool only after a transaction that ended
    cleanly; one that saw any error is closed and never reused, because after a
    timeout or an unexpected reply it may be out of step with the server.
    """

    def __init__(self, new_connection: Callable[[], SMTPConnection], size: int) -> None:
        self._new_connection = new_connection
        self._slots = asyncio.Semaphore(size)
        self._idle: list[SMTPConnection] = []
        self._closed = False

    @asynccontextmanager
    async def connection(self, *, fresh: bool = False) -> AsyncIterator[SMTPConnection]:
        """Lend a connection for one transaction.

        Args:
            fresh: Open a new connection rather than reuse an idle one.

        Yields:
            An open connection, between transactions.
        """
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        async with self._slots:
            connection = None if fresh else self._take_idle()
            if connection is None:
                connection = self._new_connection()
                try:
                    await connection.open()
                except BaseException:
                    connection.close()
                    raise
            try:
                yield connection
            except BaseException:
                connection.close()
                raise
            if self.is_closed or not connection.is_usable:
                await connection.quit()
            else:
                self._idle.append(connection)

    @property
    def is_closed(self) -> bool:
        """Return whether ``aclose`` was called."""
        return self._closed

    def _take_idle(self) -> SMTPConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.is_usable:
                return connection
            # The server closed it while idle; nothing was in flight.
            connection.close()
        return None

    async def aclose(self) -> None:
        """Close every idle connection with QUIT; lent ones close when returned."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(connection.quit() for connection in idle))
