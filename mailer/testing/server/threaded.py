"""Run the SMTP test server in a thread of its own, for synchronous code and tests.

An async test should use ``SMTPTestServer`` (same loop as the test). Code
that is synchronous, or that runs its own event loop (``asyncio.run`` inside
the code under test), needs a server whose loop keeps running meanwhile::

    with ThreadedSMTPTestServer(tls="starttls") as server:
        asyncio.run(send_report(server.settings()))
        server.outbox.wait_for_blocking(subject="Report")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from mailer.config.settings import MailerSettings
from mailer.testing.outbox import Outbox
from mailer.testing.server.faults import FaultPlan
from mailer.testing.server.server import SMTPTestServer
from mailer.testing.tls import TLSBundle

T = TypeVar("T")
START_TIMEOUT = 10.0


class ThreadedSMTPTestServer:
    """An ``SMTPTestServer`` whose event loop runs in a background thread.

    Takes the same options as ``SMTPTestServer``. Its ``faults`` and
    ``outbox`` are safe to use from the test's thread.
    """

    def __init__(self, **options: Any) -> None:
        self.server = SMTPTestServer(**options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start the thread and the server; return once it is listening.

        Raises:
            RuntimeError: Already started.
        """
        if self._thread is not None:
            raise RuntimeError("the threaded test SMTP server is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name="mailer-smtp-test-server", daemon=True
        )
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            self._call(self.server.start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server, end its thread and close its loop (idempotent)."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self._shut_down(), loop).result(
                    START_TIMEOUT
                )
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(START_TIMEOUT)
            loop.close()

    async def _shut_down(self) -> None:
        await self.server.stop()
        # Let the sessions' tasks see their connections close, then end any
        # that are left, so the loop closes with nothing pending.
        await asyncio.sleep(0)
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the threaded test SMTP server is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(START_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the server's own attributes ----------------------------------------

    @property
    def host(self) -> str:
        """Return the address the server listens on."""
        return self.server.host

    @property
    def port(self) -> int:
        """Return the port the server listens on."""
        return self.server.port

    @property
    def address(self) -> str:
        """Return ``host:port``."""
        return self.server.address

    @property
    def outbox(self) -> Outbox:
        """Return the mail the server accepted."""
        return self.server.outbox

    @property
    def faults(self) -> FaultPlan:
        """Return the fault plan."""
        return self.server.faults

    @property
    def transcripts(self) -> list[list[str]]:
        """Return each session's dialogue."""
        return self.server.transcripts

    @property
    def sessions_opened(self) -> int:
        """Return how many connections the server has accepted."""
        return self.server.sessions_opened

    @property
    def tls_bundle(self) -> TLSBundle | None:
        """Return the certificates in use."""
        return self.server.tls_bundle

    def settings(self, **overrides: Any) -> MailerSettings:
        """Return settings that send to this server (see ``SMTPTestServer``)."""
        return self.server.settings(**overrides)

    def __repr__(self) -> str:
        return repr(self.server).replace("SMTPTestServer", "ThreadedSMTPTestServer")
