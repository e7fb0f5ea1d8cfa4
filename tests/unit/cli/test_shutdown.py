"""Signals: the first one stops the batch gracefully, a second one exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import NoReturn

import pytest

from mailer.cli.shutdown import Shutdown, exit_code_for


class ExitedError(Exception):
    """Raised by the fake exit, with the code the process would have had."""


def fake_exit(code: int) -> NoReturn:
    raise ExitedError(code)


def test_exit_codes_follow_the_shell_convention() -> None:
    """SIGINT is 130, SIGTERM 143."""
    assert exit_code_for(signal.SIGINT) == 130
    assert exit_code_for(signal.SIGTERM) == 143


async def test_the_first_signal_sets_stop_and_the_exit_code() -> None:
    """SIGTERM: stop is set, the code is 143, the callback hears about it."""
    heard: list[str] = []
    shutdown = Shutdown(on_first=heard.append, exit_now=fake_exit)
    shutdown.handle(signal.SIGTERM)
    assert shutdown.stop.is_set()
    assert shutdown.exit_code == 143
    assert heard == ["SIGTERM"]


async def test_a_second_signal_exits_at_once() -> None:
    """Ctrl-C twice: the second exits immediately with 130."""
    said: list[str] = []
    shutdown = Shutdown(on_second=said.append, exit_now=fake_exit)
    shutdown.handle(signal.SIGINT)
    with pytest.raises(ExitedError) as caught:
        shutdown.handle(signal.SIGINT)
    assert caught.value.args == (130,)
    assert said == ["SIGINT"]


async def test_real_signals_reach_the_handler_only_while_installed() -> None:
    """os.kill(SIGINT) inside the block sets stop; the handler is removed after."""
    shutdown = Shutdown(exit_now=fake_exit)
    with shutdown.installed():
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(shutdown.stop.wait(), 2)
    assert shutdown.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


async def test_sighup_is_handled_like_sigterm() -> None:
    """SIGHUP (a closed terminal): stop with a reason, exit code 129 (issue 11.12)."""
    assert exit_code_for(signal.SIGHUP) == 129
    heard: list[str] = []
    shutdown = Shutdown(on_first=heard.append, exit_now=fake_exit)
    with shutdown.installed():
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(shutdown.stop.wait(), 2)
    assert shutdown.exit_code == 129
    assert heard == ["SIGHUP"]
    assert shutdown.stop.reason == "interrupted (SIGHUP)"
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


async def test_a_stop_set_by_the_command_is_not_a_first_signal() -> None:
    """The report failing sets stop; a later Ctrl-C is then a first signal, not an exit."""
    heard: list[str] = []
    shutdown = Shutdown(on_first=heard.append, exit_now=fake_exit)
    shutdown.stop.set_reason("stopped: the report cannot be written")
    shutdown.handle(signal.SIGINT)  # would raise ExitedError if taken as a second
    assert heard == ["SIGINT"]
    assert shutdown.exit_code == 130
    assert shutdown.stop.reason == "stopped: the report cannot be written"
