"""Run one sender process: send the spool chunks the parent hands it, report each row.

The child's side of ``mailer.bulk.senders``. The process was forked from the
parent's event loop thread after the check pass; it runs a new event loop
of its own, with its own ``MessageClient`` (its share of MAILER_CONCURRENCY),
and sends whole spool chunks as the parent hands them out. Each row it takes
ends with one result sent back over its pipe: sent, failed, skipped as a
repeat (``dedupe``), failed unsent (the check pass could not prepare it), or
``pending``: the batch stopped before its turn, with the reason ``SpoolSend``
gives in one process.

Messages from the parent (``("c", chunk)`` a chunk to send, ``("x", reason)``
stop, ``("z",)`` no more chunks) arrive on one pipe; results go back on the
other, ``FLUSH_RESULTS`` at a time or every ``FLUSH_AFTER`` seconds, with
``("s", chunk)`` when it starts reading a chunk (the parent then hands it
the next), ``("t", chunk, rows)`` before the first ``rows`` rows of a chunk
may be sent (sent at once, ``TAKE_AHEAD`` rows at a time: should this
process die, the parent knows which rows may have gone out and which were
never taken), ``("d", chunk)`` once every row of a chunk has a result, and
``("e",)`` at the end. The parent keeps its pipe open until this process has
ended: a pipe that closes means the parent died, and this process exits at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

from mailer.bulk.checkpass import RowRenderer
from mailer.bulk.handout import FrameReader, ResultBatch, frame, pack_result
from mailer.bulk.identity import CheckedRows
from mailer.bulk.recipients import DuplicateRow, InvalidRow
from mailer.bulk.spool import SpooledRow, read_chunk
from mailer.bulk.spooled import spooled_message
from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.delivery.client import MessageClient
from mailer.delivery.control import StopEvent
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.state import PreparedMessage
from mailer.exceptions import RecipientsChangedError
from mailer.transports.smtp.transport import SMTPTransport

# Rows of a chunk announced to the parent at a time, before they may be sent.
TAKE_AHEAD = 32
# Exit codes of a sender process (the parent reads only whether it said "e").
EXIT_DONE = 0
EXIT_ORPHANED = 3  # the parent died: nobody is left to report to
EXIT_FAILED = 70  # an unexpected error (EX_SOFTWARE)


@dataclass(frozen=True, slots=True)
class SenderJob:
    """What a sender process inherits from the parent when it is forked.

    Attributes:
        number: The sender's number (from 0), for messages.
        settings: The batch's settings, with this sender's share of
            MAILER_CONCURRENCY.
        relay: The relay's settings, with the same share.
        render: Renders a row whose message was too large to spool (its
            ``render``).
        checked: The check pass's record (repeats, the file watch).
        spool: The spool's folder.
        dedupe: Skip the rows repeating an earlier row's address.
    """

    number: int
    settings: MailerSettings
    relay: MailerSettings
    render: RowRenderer
    checked: CheckedRows
    spool: Path
    dedupe: bool


def run_sender(job: SenderJob, commands: int, results: int) -> NoReturn:
    """Run a freshly forked sender process to its end, then exit (never return).

    Args:
        job: What to send with.
        commands: The pipe the parent's messages arrive on.
        results: The pipe results go back on.
    """
    code = EXIT_FAILED
    try:
        # A Ctrl-C (SIGINT), a closed terminal (SIGHUP) or `systemctl stop`
        # (SIGTERM to the whole control group) reaches every process: the
        # parent stops the batch and tells this process, which must neither
        # die of it (its messages in flight get their grace) nor write to the
        # parent's wakeup descriptor (its loop would count a second Ctrl-C).
        # The parent ends a sender with SIGKILL; a sender whose parent is
        # gone ends at its pipe's EOF.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        _own_standard_streams()
        # Forked from inside the parent's running loop: this thread still
        # says it runs one. A new loop of its own, never the parent's.
        asyncio._set_running_loop(None)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_Sender(job, commands, results).run())
        code = EXIT_DONE
    except BaseException as exc:  # noqa: BLE001 - one line, then the parent reports
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"mailer: sender process {job.number} failed: "
                f"{type(exc).__name__}: {exc}\n"
            )
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _own_standard_streams() -> None:
    """Write to standard output and error through new file objects of our own.

    The parent's may be a progress bar's proxy (rich redirects ``sys.stderr``
    while it draws), and a lock of theirs may have been held by one of the
    parent's threads at the fork, a thread this process does not have: a
    log record written through them could hang, or draw the bar again. The
    file descriptors are the same: lines still reach the same terminal.
    """
    replaced: dict[int, TextIO] = {}
    for name, descriptor in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, f"__{name}__", None) or getattr(sys, name)
        new = open(  # noqa: SIM115 - this process's stream until it exits
            descriptor,
            "w",
            encoding=getattr(old, "encoding", None) or "utf-8",
            errors=getattr(old, "errors", None) or "backslashreplace",
            closefd=False,
            buffering=1,
        )
        replaced[id(old)] = replaced[id(getattr(sys, name))] = new
        setattr(sys, name, new)
    loggers: list[logging.Logger | logging.PlaceHolder] = [
        logging.getLogger(),
        *logging.Logger.manager.loggerDict.values(),
    ]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and id(stream) in replaced:
                # Not setStream: it would flush the old stream, and wait for
                # its lock.
                handler.stream = replaced[id(stream)]


def pending(row: SpooledRow, reason: str) -> SendResult:
    """Return the ``pending`` result of a spooled row the batch did not take."""
    return SendResult.of(
        SendStatus.PENDING,
        to=(row.row.email,),
        message_id=None,
        recipients={},
        refused={},
        error=reason,
        transient=True,
    )


class _Sender:
    """The sender's event loop side: chunks in, results out."""

    def __init__(self, job: SenderJob, commands: int, results: int) -> None:
        self.job = job
        self.commands = commands
        self.results = results
        self.stop = StopEvent()
        self.changed: RecipientsChangedError | None = None
        self.halted: str | None = None  # a batch that stopped itself (fatal)
        self._queue: deque[int] = deque()  # chunks handed, not yet read
        self._ended = False  # the parent has no more chunks
        self._more = asyncio.Event()
        self._reader = FrameReader()
        self._batch = ResultBatch()
        self._flush_timer: asyncio.TimerHandle | None = None
        # The chunk being read, its rows left, and rows taken without a result.
        self._chunk: int | None = None
        self._rows: Iterator[SpooledRow] | None = None
        self._open: dict[int, int] = {}
        self._read_whole: set[int] = set()
        self._taken = 0  # rows taken from the chunk being read
        self._announced = 0  # rows of it the parent was told may be sent

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        os.set_blocking(self.commands, False)
        loop.add_reader(self.commands, self._on_commands)
        client = MessageClient(
            self.job.settings, transport=SMTPTransport(self.job.relay)
        )
        async with client:
            while True:
                if self._queue or self._rows is not None:
                    reason = self._rest_reason()
                    if reason is None:
                        await self._send_some(client)
                    else:
                        self._report_rest(reason)
                    continue
                if self._ended:
                    break
                self._more.clear()
                await self._more.wait()
        loop.remove_reader(self.commands)
        self._send_now(("e",))

    # Messages from the parent.

    def _on_commands(self) -> None:
        try:
            data = os.read(self.commands, 65536)
        except BlockingIOError:
            return
        if not data:
            # The parent keeps this pipe open until this process has ended:
            # it died (a second Ctrl-C, a kill). No one is left to hear of
            # these messages, and no sender outlives its batch.
            os._exit(EXIT_ORPHANED)
        for command in self._reader.feed(data):
            kind = command[0]
            if kind == "c":
                self._queue.append(command[1])
            elif kind == "x":
                self.stop.set_reason(command[1])
            elif kind == "z":
                self._ended = True
        self._more.set()

    # Results to the parent.

    def _report(self, chunk: int, position: int, line: int, outcome: Any) -> None:
        if isinstance(outcome, SendResult):
            outcome = pack_result(outcome)  # a tenth of the cost of pickling it
        self._add(("r", chunk, position, line, outcome))
        self._open[chunk] -= 1
        self._maybe_done(chunk)

    def _maybe_done(self, chunk: int) -> None:
        if chunk in self._read_whole and not self._open[chunk]:
            self._read_whole.discard(chunk)
            del self._open[chunk]
            self._add(("d", chunk))

    def _add(self, item: tuple[Any, ...]) -> None:
        """Keep ``item`` for the parent: sent with a full batch, or after a moment."""
        if self._batch.add(item, time.monotonic()):
            self._flush()
        elif self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self._batch.age, self._flush)

    def _send_now(self, item: tuple[Any, ...]) -> None:
        self._batch.add(item, time.monotonic())
        self._flush()

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not len(self._batch):
            return
        data = frame(self._batch.take())
        try:
            # Blocking: the parent reads all the time, and waiting for it is
            # the right pace when it is busy.
            while data:
                data = data[os.write(self.results, data) :]
        except BrokenPipeError:
            os._exit(EXIT_ORPHANED)  # the parent is gone: nobody to report to

    # Reading the chunks.

    def _next_row(self, *, to_send: bool = True) -> tuple[int, SpooledRow] | None:
        """Return the next row and its chunk; None when none is handed out yet.

        Args:
            to_send: The row may be sent: the parent hears of it first.
        """
        while True:
            if self._rows is None or self._chunk is None:
                if not self._queue:
                    return None
                self._chunk = self._queue.popleft()
                self._open[self._chunk] = 0
                self._rows = read_chunk(self._chunk_path(self._chunk), remove=False)
                self._taken = self._announced = 0
                # The parent answers with another chunk.
                self._add(("s", self._chunk))
            row = next(self._rows, None)
            if row is None:
                self._read_whole.add(self._chunk)
                self._maybe_done(self._chunk)
                self._rows = None
                continue
            if to_send and self._taken >= self._announced:
                # Said before any of these rows goes out: should this process
                # die, the parent knows the rows after them were never sent.
                self._announced = self._taken + TAKE_AHEAD
                self._send_now(("t", self._chunk, self._announced))
            self._taken += 1
            self._open[self._chunk] += 1
            return self._chunk, row

    def _put_back(self, chunk: int, row: SpooledRow) -> None:
        assert self._rows is not None  # noqa: S101 - it was just read from
        self._open[chunk] -= 1
        self._taken -= 1
        self._rows = itertools.chain((row,), self._rows)

    def _chunk_path(self, chunk: int) -> Path:
        return self.job.spool / f"{chunk:08d}"

    def _rest_reason(self) -> str | None:
        """Return why no further row is sent, if none is."""
        if self.changed is not None:
            return f"not sent: {self.changed}"
        if self.stop.is_set():
            return f"not sent: {self.stop.reason}"
        return self.halted

    # Sending.

    async def _send_some(self, client: MessageClient) -> None:
        """Send rows until none is handed out yet, or the batch stops."""
        taken: dict[int, tuple[int, int, int]] = {}  # index -> chunk, position, line
        messages = self._messages(taken)
        async for index, result in client.stream(messages, stop=self.stop):
            chunk, position, line = taken.pop(index)
            if (
                result.status is SendStatus.PENDING
                and self.halted is None
                and not self.stop.is_set()
            ):
                # The batch stopped itself (every message would fail the same
                # way): as in one process, the rest is not tried.
                self.halted = result.error
            self._report(chunk, position, line, result)

    def _messages(
        self, taken: dict[int, tuple[int, int, int]]
    ) -> Iterator[PreparedMessage | Message]:
        # A plain generator: the engine pulls it inline, no task per message.
        index = 0
        while not self.stop.is_set() and self.halted is None:
            found = self._next_row()
            if found is None:
                return  # nothing handed out yet: wait for the parent
            chunk, spooled = found
            try:
                self.job.checked.check_unchanged()
            except RecipientsChangedError as exc:
                self.changed = exc  # no further message: the rest end pending
                self._put_back(chunk, spooled)
                return
            message = self._message(chunk, spooled)
            if message is not None:
                taken[index] = (chunk, spooled.position, spooled.row.line)
                index += 1
                yield message

    def _message(
        self, chunk: int, spooled: SpooledRow
    ) -> PreparedMessage | Message | None:
        """Return the row's message, or report what became of a row not sent."""
        found = spooled_message(
            spooled, self.job.render.render, self.job.checked, self.job.dedupe
        )
        if isinstance(found, (PreparedMessage, Message)):
            return found
        self._report(chunk, spooled.position, spooled.row.line, found)
        return None

    def _report_rest(self, reason: str) -> None:
        """Report ``pending`` for every row handed to this sender and not taken."""
        while (found := self._next_row(to_send=False)) is not None:
            chunk, spooled = found
            row = spooled.row
            outcome: SendResult | InvalidRow
            if self.job.dedupe and self.job.checked.is_repeat(spooled.position):
                outcome = DuplicateRow(row.line, row.email)
            else:
                outcome = pending(spooled, reason)
            self._report(chunk, spooled.position, row.line, outcome)
        self._flush()
