"""Turn SIGINT/SIGTERM/SIGHUP into a graceful stop of a batch; a second one exits now.

The first signal sets ``stop``: the batch takes no new message and gives the
attempts in flight ``MAILER_SHUTDOWN_GRACE`` seconds, then everything is
recorded and the command exits 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP: the
terminal closed, or a supervisor's reload; it used to kill the batch with no
summary). A second signal exits at once. That is safe for the journal: each
of its commits is atomic (SQLite), so the file holds the last committed state
of every message, and the attempts cut short stay ``sending``, which a resume
treats as ambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

from mailer.delivery.control import StopEvent

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_code_for(signum: int) -> int:
    """Return the shell's exit code for a process ended by ``signum`` (128 + n)."""
    return 128 + signum


def _exit_now(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    # No cleanup on purpose: the user asked to stop now, and the journal is
    # consistent at every instant.
    os._exit(code)


class Shutdown:
    """Watch for SIGINT/SIGTERM while a batch runs.

    Args:
        on_first: Called with the signal's name when the first one arrives.
        on_second: Called with the signal's name before an immediate exit.
        exit_now: Ends the process with a code (``os._exit``; replaced in tests).
    """

    def __init__(
        self,
        *,
        on_first: Callable[[str], None] | None = None,
        on_second: Callable[[str], None] | None = None,
        exit_now: Callable[[int], NoReturn] = _exit_now,
    ) -> None:
        self.stop = StopEvent()
        self.exit_code: int | None = None
        self._on_first = on_first
        self._on_second = on_second
        self._exit_now = exit_now

    def handle(self, signum: int) -> None:
        """React to a signal: stop the batch, or exit at once if already stopping."""
        name = signal.Signals(signum).name
        if self.exit_code is not None:  # a signal came before: the second one
            if self._on_second is not None:
                self._on_second(name)
            self._exit_now(exit_code_for(signum))
        self.exit_code = exit_code_for(signum)
        self.stop.set_reason(f"interrupted ({name})")
        if self._on_first is not None:
            self._on_first(name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Shutdown]:
        """Handle the signals in the running loop for the duration of the block."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        try:
            for signum in SIGNALS:
                try:
                    loop.add_signal_handler(signum, self.handle, signum)
                except (NotImplementedError, RuntimeError):  # pragma: no cover
                    continue  # Windows or not the main thread: Ctrl-C still ends it
                installed.append(signum)
            yield self
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
