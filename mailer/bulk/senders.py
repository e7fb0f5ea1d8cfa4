"""Run a spooled batch's send pass on every core: sender processes, one per worker.

After the check pass has filled the spool (``mailer.bulk.spooled``), the send
pass only reads prepared messages and speaks SMTP, which still takes about
half of a batch's CPU. With ``MAILER_WORKERS`` (``--workers``) above 1, or by
default on a machine with several cores, a batch of more than one chunk is
sent by N = min(workers, MAILER_CONCURRENCY) sender processes
(``mailer.bulk.sender``), forked after the check pass. Each makes its own
client with its share of MAILER_CONCURRENCY (the connections of all senders
add up to it), and this process hands them whole chunks, at most
``AHEAD_PER_SENDER`` each ahead, and turns their results back into the
outcomes ``SpoolSend`` yields in one process: the report, the progress bar and
the exit code are those of one process.

By default (``MAILER_WORKERS=0``) there are no senders when the relay is on
this machine (``localhost``, a loopback address): such a server, a Python one
like ``mailer inbox`` above all, needs cores of its own, and two senders
beside it made a 2-core machine slower; ``--workers N`` asks for them anyway.
The send pass stays in one process whenever sending elsewhere would change
what happens (``sender_count``): a journal (one SQLite writer; that path never
comes here), a batch of one chunk, ``--workers 1``, a rate limit (its window
is counted per process), a transport that is not one SMTP relay made from
the settings (``console://``, a failover list whose relays' health is kept
per process, ``mailer.testing.use_transport``'s in-memory transport, whose
outbox is in this process), or a client something must watch (hooks,
telemetry, ``MAILER_REDIRECT_TO``, a patched factory: those never spool).

Every row still ends sent, failed or ``pending``: a stop is passed on to every
sender (each gives the messages in flight MAILER_SHUTDOWN_GRACE, then reports
the rest of its chunks pending), the chunks never handed out are reported
pending here, and a sender that dies leaves its rows without a result
``pending`` here, with a reason saying it may have sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from mailer.bulk.checkpass import RowRenderer
from mailer.bulk.handout import (
    ChunkDealer,
    FrameReader,
    concurrency_shares,
    frame,
    unpack_result,
)
from mailer.bulk.identity import CheckedRows
from mailer.bulk.recipients import DuplicateRow
from mailer.bulk.sender import SenderJob, pending, run_sender
from mailer.bulk.spool import Spool, SpooledRow, read_chunk
from mailer.bulk.spooled import SpoolOutcome
from mailer.bulk.workers import worker_count
from mailer.config.settings import MailerSettings
from mailer.delivery import client as client_module
from mailer.delivery.client import MessageClient
from mailer.delivery.results import SendResult, SendStatus
from mailer.exceptions import RecipientsChangedError
from mailer.transports.smtp.transport import SMTPTransport

# Seconds a stopped sender gets beyond MAILER_SHUTDOWN_GRACE to report its
# rows, before it is killed and its rows reported here.
STOP_MARGIN = 10.0
# The pids of every sender process started, in order: for tests, which check
# that none was started, or that none is left.
STARTED_PIDS: list[int] = []

_DIED = (
    "not sent: the sender process {pid} sending it ended unexpectedly ({how}) "
    "before reporting it; it may have been sent: check before sending it again"
)
_DIED_BEFORE = (
    "not sent: the sender process {pid} ended unexpectedly ({how}) before its turn"
)
_STOPPED_FOR_DEATH = (
    "stopped: a sender process ended unexpectedly ({how}); --workers 1 "
    "(MAILER_WORKERS=1) sends from one process"
)


def sender_count(client: MessageClient, spool: Spool) -> int:
    """Return how many sender processes send this spooled batch (1: this one).

    Args:
        client: The batch's client, made from the settings by the factory.
        spool: The batch's spool, filled by the check pass.
    """
    settings = client.settings
    count = min(worker_count(settings.workers), settings.concurrency)
    if count <= 1 or spool.chunks <= 1:
        return 1
    # A transport tests put in place (use_transport) keeps its outbox here.
    if client_module.transport_override is not None:
        return 1
    if type(client.transport) is not SMTPTransport or len(settings.relays) != 1:
        return 1  # console://, failover: relay health is kept per process
    if settings.workers == 0 and is_this_machine(settings.relays[0].smtp_host):
        # Automatic: a server on this machine (mailer inbox, a local Postfix)
        # needs cores of its own, which senders would take (aiosmtpd on 2
        # cores: 0.74x the rate). --workers N asks for senders all the same.
        return 1
    if any(relay.rate_limit is not None for relay in settings.relays):
        return 1  # a rate limit's window is counted per process
    if not client.accepts_prepared:
        return 1  # hooks or telemetry must see every message, here
    if threading.current_thread() is not threading.main_thread():
        return 1  # a sender sets its own signal handlers: main thread only
    return count


def is_this_machine(host: str) -> bool:
    """Return whether ``host`` is this machine: ``localhost``, a loopback address."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: somewhere else, as far as we know


@dataclass
class _Child:
    """One sender process, as this process sees it."""

    number: int
    pid: int
    commands: int  # write end
    results: int  # read end (non-blocking)
    reader: FrameReader = field(default_factory=FrameReader)
    reported: dict[int, set[int]] = field(default_factory=dict)  # chunk -> positions
    taken: dict[int, int] = field(default_factory=dict)  # chunk -> rows it may send
    at_eof: bool = False
    said_end: bool = False  # it sent ("e",): it ended as it should
    told_end: bool = False  # it was sent ("z",)
    reaped: bool = False
    status: int | None = None

    def tell(self, *command: Any) -> None:
        """Send ``command``; a sender that has died is found by its results pipe."""
        if self.at_eof:
            return
        # A few bytes, into a pipe the sender reads all the time: never blocks.
        with contextlib.suppress(BrokenPipeError):
            os.write(self.commands, frame([command]))


class SenderRun:
    """Fork the sender processes and gather their results into outcomes.

    Use ``outcomes()`` once, from the event loop's thread.

    Args:
        count: How many sender processes.
        client: The batch's client (its settings; it is not used to send).
        render: Renders a row too large to spool (in the senders).
        checked: The check pass's record.
        spool: The prepared messages.
        dedupe: Skip the rows repeating an earlier row's address.
        stop: The batch's stop.
    """

    def __init__(
        self,
        count: int,
        client: MessageClient,
        render: RowRenderer,
        checked: CheckedRows,
        spool: Spool,
        *,
        dedupe: bool,
        stop: asyncio.Event | None,
    ) -> None:
        self.count = count
        self.settings = client.settings
        self.render = render
        self.checked = checked
        self.spool = spool
        self.dedupe = dedupe
        self.stop = stop
        self.dealer = ChunkDealer(range(spool.chunks), count)
        self.children: list[_Child] = []
        self.reason: str | None = None  # why the batch stopped, if it did
        self._told_stop = False  # the senders were told to stop (grace)
        self._inbox: list[tuple[_Child, Any]] = []
        self._wake = asyncio.Event()

    async def outcomes(self) -> AsyncIterator[SpoolOutcome]:
        """Yield every spooled row's outcome as the senders report it."""
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = None
        try:
            self._fork_all()
            for child in self.children:
                loop.add_reader(child.results, self._on_results, child)
            if self.stop is not None:
                watcher = asyncio.create_task(self._watch(self.stop))
            for number, chunk in self.dealer.first_deal():
                self.children[number].tell("c", chunk)
            self._end_if_dealt()
            deadline: float | None = None
            while True:
                while self._inbox:
                    for outcome in self._take_inbox():
                        yield outcome
                for child in self.children:
                    if self._inbox:
                        break  # a sender's last results first, then its end
                    if child.at_eof and not child.reaped:
                        for outcome in await self._reap(child):
                            yield outcome
                if all(child.reaped for child in self.children):
                    break
                self._stop_if_asked()
                if self._told_stop and deadline is None:
                    deadline = time.monotonic() + self.settings.shutdown_grace
                    deadline += STOP_MARGIN
                if self._inbox:
                    continue
                self._wake.clear()
                timeout = None if deadline is None else deadline - time.monotonic()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    # Stuck past its grace: killed, its rows reported as a dead
                    # sender's once its pipe closes (a moment).
                    self._kill_all()
                    deadline = time.monotonic() + STOP_MARGIN
            for outcome in self._never_handed():
                yield outcome
        finally:
            if watcher is not None:
                watcher.cancel()
            for child in self.children:
                with contextlib.suppress(Exception):
                    loop.remove_reader(child.results)
            self._kill_all()
            for child in self.children:
                self._wait(child, block=True)
                for fd in (child.commands, child.results):
                    with contextlib.suppress(OSError):
                        os.close(fd)

    # Starting the senders.

    def _fork_all(self) -> None:
        shares = concurrency_shares(self.settings.concurrency, self.count)
        relay = self.settings.relays[0]
        # The objects this process holds now are the senders' too, shared
        # page by page until written: kept out of the cyclic collector's
        # reach, a sender's collections do not write (so copy) every page.
        gc.freeze()
        try:
            for number, share in enumerate(shares):
                self._fork_one(number, share, relay)
        finally:
            gc.unfreeze()

    def _fork_one(self, number: int, share: int, relay: MailerSettings) -> None:
        job = SenderJob(
            number,
            self.settings.model_copy(update={"concurrency": share}),
            relay.model_copy(update={"concurrency": share}),
            self.render,
            self.checked,
            self.spool.path,
            self.dedupe,
        )
        self.children.append(self._fork(job))

    def _fork(self, job: SenderJob) -> _Child:
        commands_read, commands_write = os.pipe()
        results_read, results_write = os.pipe()
        # Theirs, in the new process: the other senders' ends are closed
        # there, or a sender would keep another's pipe open after its death.
        theirs = [
            fd for child in self.children for fd in (child.commands, child.results)
        ]
        # Written before forking, or the sender would write it again.
        sys.stdout.flush()
        sys.stderr.flush()
        blocked = {signal.SIGINT, signal.SIGTERM}
        # Blocked while forking: a signal meanwhile waits for this process
        # (a moment), and the sender starts with it blocked until it has
        # made itself deaf to it (see run_sender).
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
            if pid == 0:  # the sender: never returns
                for fd in (*theirs, commands_write, results_read):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                run_sender(job, commands_read, results_write)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        STARTED_PIDS.append(pid)
        os.close(commands_read)
        os.close(results_write)
        os.set_blocking(results_read, False)
        return _Child(job.number, pid, commands_write, results_read)

    # Reading the senders' results.

    def _on_results(self, child: _Child) -> None:
        try:
            data = os.read(child.results, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            child.at_eof = True
            asyncio.get_running_loop().remove_reader(child.results)
        else:
            self._inbox.extend((child, item) for item in child.reader.feed(data))
        self._wake.set()

    def _take_inbox(self) -> Iterator[SpoolOutcome]:
        inbox, self._inbox = self._inbox, []
        for child, item in inbox:
            kind = item[0]
            if kind == "r":
                _, chunk, position, line, outcome = item
                child.reported.setdefault(chunk, set()).add(position)
                if isinstance(outcome, tuple):
                    yield position, line, unpack_result(outcome)
                else:  # a row not sent: repeated, or no longer rendering
                    yield -1, line, outcome
            elif kind == "s":
                self._started(child, item[1])
            elif kind == "t":
                child.taken[item[1]] = item[2]
            elif kind == "d":
                self.dealer.finished(child.number, item[1])
                child.reported.pop(item[1], None)
                child.taken.pop(item[1], None)
                with contextlib.suppress(OSError):
                    self.spool.chunk_path(item[1]).unlink()
            elif kind == "e":
                child.said_end = True

    def _started(self, child: _Child, chunk: int) -> None:
        """Hand ``child`` its next chunk, unless the batch stopped."""
        if self.reason is None:
            try:
                self.checked.check_unchanged()
            except RecipientsChangedError as exc:
                # The senders see it too, at their next message: no new chunk.
                self._stop_all(f"not sent: {exc}", tell=False)
        if self.reason is not None:
            self.dealer.note_started(child.number, chunk)  # nothing more dealt
            return
        given = self.dealer.started(child.number, chunk)
        if given is not None:
            child.tell("c", given)
        self._end_if_dealt()

    def _end_if_dealt(self) -> None:
        if self.dealer.is_empty or self.reason is not None:
            for child in self.children:
                if not child.told_end:
                    child.told_end = True
                    child.tell("z")

    # Stopping.

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    def _stop_if_asked(self) -> None:
        if self.stop is not None and self.stop.is_set() and self.reason is None:
            self._stop_all(f"not sent: {getattr(self.stop, 'reason', 'interrupted')}")

    def _stop_all(self, reason: str, *, tell: bool = True) -> None:
        """Stop the batch: no chunk handed out any more; senders told to stop."""
        if self.reason is not None:
            return
        self.reason = reason
        if tell:
            # A stop: each sender gives what is in flight the grace, then
            # reports. (A changed file: they see it themselves, and what is
            # in flight ends as in one process.)
            self._told_stop = True
            said = reason.removeprefix("not sent: ")
            for child in self.children:
                child.tell("x", said)
        self._end_if_dealt()

    def _kill_all(self) -> None:
        for child in self.children:
            if not child.reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)

    # Ending.

    def _wait(self, child: _Child, *, block: bool) -> bool:
        """Reap ``child`` if it has exited; return whether it has."""
        if child.reaped:
            return True
        try:
            pid, status = os.waitpid(child.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: status unknown
            child.reaped = True
            return True
        if pid == 0:
            return False
        child.reaped, child.status = True, status
        return True

    async def _reap(self, child: _Child) -> list[SpoolOutcome]:
        """Reap a sender whose pipe closed; return the outcomes of rows it left."""
        # Its pipe closes as it exits: a moment at most, unless it closed it
        # and hangs (then it is killed, after about 2 s).
        for wait in itertools.chain((0.001,) * 20, (0.01,) * 200):
            if self._wait(child, block=False):
                break
            await asyncio.sleep(wait)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            self._wait(child, block=True)
        if child.said_end and not child.reader.is_partial:
            return []
        how = _how_it_ended(child.status)
        self._stop_all(f"not sent: {_STOPPED_FOR_DEATH.format(how=how)}")
        outcomes = list(self._left_by(child, how))
        self.dealer.forget(child.number)
        return outcomes

    def _left_by(self, child: _Child, how: str) -> Iterator[SpoolOutcome]:
        """Yield an outcome for each row a dead sender held and did not report."""
        died = _DIED.format(pid=child.pid, how=how)
        before = _DIED_BEFORE.format(pid=child.pid, how=how)
        for chunk, _ in self.dealer.unfinished(child.number):
            reported = child.reported.get(chunk, set())
            taken = child.taken.get(chunk, 0)
            for index, spooled in enumerate(self._read(chunk)):
                if spooled.position in reported:
                    continue
                may_have_gone = index < taken
                reason = died if may_have_gone else before
                yield self._not_reported(spooled, reason, may_have_gone)

    def _not_reported(
        self, spooled: SpooledRow, reason: str, may_have_gone: bool
    ) -> SpoolOutcome:
        row = spooled.row
        if self.dedupe and self.checked.is_repeat(spooled.position):
            return -1, row.line, DuplicateRow(row.line, row.email)
        if spooled.failure is not None:
            return spooled.position, row.line, spooled.failure  # never sendable
        message = spooled.message
        result = SendResult.of(
            SendStatus.PENDING,
            to=(row.email,),
            # The Message-ID it went out with, if it did: to look it up.
            message_id=message.message_id if message and may_have_gone else None,
            recipients={},
            refused={},
            error=reason,
            transient=True,
            ambiguous=may_have_gone,
        )
        return spooled.position, row.line, result

    def _never_handed(self) -> Iterator[SpoolOutcome]:
        """Yield ``pending`` for each row of the chunks no sender was given."""
        reason = self.reason or "not sent: the batch ended before its turn"
        for chunk in self.dealer.take_rest():
            for spooled in self._read(chunk):
                row = spooled.row
                if self.dedupe and self.checked.is_repeat(spooled.position):
                    yield -1, row.line, DuplicateRow(row.line, row.email)
                else:
                    yield spooled.position, row.line, pending(spooled, reason)

    def _read(self, chunk: int) -> Iterator[SpooledRow]:
        try:
            yield from read_chunk(self.spool.chunk_path(chunk), remove=False)
        except FileNotFoundError:
            return  # every row of it was reported ("d")


def _how_it_ended(status: int | None) -> str:
    if status is None:
        return "exit status unknown"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
