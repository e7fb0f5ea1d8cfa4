"""Run one pooled SMTP connection: a task that sends queued transactions in turn.

A lane owns at most one open connection at a time. It takes a transaction from
the pool's queue, opens the connection if it has none (lazily), and hands the
transaction to an ``Exchange`` (``exchange.py``). When the server offers
PIPELINING (RFC 2920) the exchange keeps the connection busy: the content of
one message goes out in the same write as the envelope of the next queued one,
so a steady stream costs one round trip per message instead of four. Without
PIPELINING it sends one command at a time.

Connection hygiene lives here too: a connection is closed with QUIT after
``max_messages`` transactions, once older than ``max_age``, or after sitting
``max_idle`` seconds without work. A refusal (a 4xx or 5xx to MAIL, RCPT, DATA
or the content) leaves the session in step, so it is reused, as Postfix and
Nodemailer do. A session whose state is unknown (a timeout, a lost, malformed
or out-of-step reply) is closed and never reused, with QUIT written first
whenever the server can still hear it (RFC 5321 4.1.1.10). A message that fails
a local check (the server's SIZE, SMTPUTF8, an address unfit for a command
line) fails before anything of it is written, and costs no connection.

Each Transaction records its Phase: ``DATA`` once its content has been written,
``ANSWERED`` once a well-formed reply to it came, so that a failure in between
is known to be one the server may have delivered. A lane never retries: a
transaction cut short, even one whose envelope only rode along behind a failed
message, fails with its error, and the client's retry policy decides (every
attempt counted, spaced by the backoff).

Timeouts: each reply has ``timeout`` (``MAILER_TIMEOUT``); a transaction as a
whole, from its MAIL FROM to the reply after its content, has
``message_timeout`` (``MAILER_MESSAGE_TIMEOUT``), which alone bounds the wait
for that final reply (the one a server may spend scanning the content).

Cancellation: a lane stops as soon as its task is cancelled. aiosmtplib awaits
each reply with ``asyncio.wait_for``, which on Python 3.11 returns the reply
and drops the cancellation when both arrive in the same loop iteration; the
lane checks its task's pending cancellation requests after each call into
aiosmtplib and before it waits for work, so a lost cancellation cannot leave it
waiting on the queue for ever. When the pool closes, a lane whose transactions
were all given up by their senders stops at once instead of waiting for
replies nobody will read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mailer.exceptions import UnsupportedError
from mailer.transports.ratelimit import RateLimiter
from mailer.transports.smtp.connection import Phase, SMTPConnection
from mailer.transports.smtp.exchange import Ending, Exchange
from mailer.transports.smtp.pipelining import PipelinedSession, envelope_commands
from mailer.transports.smtp.transactions import (
    PoolLimits,
    Transaction,
    TransactionQueue,
)


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop and has not stopped.

    ``Task.cancelling()`` counts the cancellation requests not yet taken back
    (``asyncio.timeout`` takes back its own); it stays above zero when
    ``asyncio.wait_for`` swallowed the CancelledError (Python 3.11).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Lane:
    """One connection slot of a pool, and the loop that feeds it transactions.

    Args:
        queue: Where transactions wait.
        new_connection: Makes an unopened SMTPConnection.
        limits: Reuse limits.
        timeout: Seconds to wait for each reply.
        message_timeout: Seconds for a whole transaction, final reply included.
        gate: The relay's rate limiter: a transaction starts on its turn.

    Attributes:
        task: The task running ``run()``, set by the pool.
        is_cut_short: The lane stopped because the pool closed and nobody
            waited for the work it held (its task is then cancelled).
    """

    def __init__(
        self,
        queue: TransactionQueue,
        new_connection: Callable[[], SMTPConnection],
        limits: PoolLimits,
        timeout: float,
        message_timeout: float,
        *,
        gate: RateLimiter | None = None,
    ) -> None:
        self._queue = queue
        self._gate = gate
        self._new_connection = new_connection
        self._limits = limits
        self._timeout = timeout
        self._message_timeout = message_timeout
        self._connection: SMTPConnection | None = None
        self._started = 0  # transactions begun on the current connection
        # Taken in the current exchange and not settled yet. A settled one is
        # dropped at once: an exchange may chain MAILER_POOL_MAX_MESSAGES
        # messages, and holding each (its content: megabytes with attachments)
        # until the last one grew a batch by every message's size.
        self._held: set[Transaction] = set()
        self._in_exchange = False
        self._closing = False
        self.task: asyncio.Task[None] | None = None
        self.is_cut_short = False  # stopped by close_soon, with work abandoned

    async def run(self) -> None:
        """Send queued transactions until the queue is closed and empty."""
        try:
            while True:
                raise_if_cancelled()
                idle_limit = self._limits.max_idle if self._connection else None
                transaction = await self._queue.take(idle_limit)
                if transaction is None:
                    if self._queue.is_closed:
                        break
                    await self._retire()  # idle too long: the server may drop it
                    continue
                try:
                    await self._send(transaction)
                finally:
                    self._held.clear()
                    self._in_exchange = False
        except BaseException:
            self._close(say_quit=True)
            raise
        await self._retire()

    def close_soon(self) -> None:
        """Take no new work; stop now if nobody waits for the work in hand."""
        self._closing = True
        self._stop_if_unwanted()

    async def _send(self, transaction: Transaction) -> None:
        if transaction.is_abandoned:
            return
        self._hold(transaction)
        try:
            # Checked before connecting: a bad address costs no connection.
            transaction.envelope.check_sendable()
            connection = await self._take_turn()
            raise_if_cancelled()
            if transaction.outcome.done():
                return  # its sender gave up while it waited for its turn
            # Local checks against the server's EHLO (SIZE, SMTPUTF8): nothing
            # is written yet, so the session stays as it was.
            options, encoding = connection.mail_options(
                transaction.envelope, transaction.content
            )
            group = envelope_commands(transaction.envelope, options, encoding)
            session = PipelinedSession(connection.smtp, self._timeout)
        except Exception as exc:  # noqa: BLE001 - handed to the sender
            transaction.fail(exc)
            return
        except BaseException:
            transaction.outcome.cancel()
            raise
        self._begin(transaction)
        exchange = Exchange(
            session,
            server=connection.server,
            pipelining=connection.supports_pipelining,
            next_group=lambda: self._next_group(connection),
        )
        with session:
            ending = await exchange.run(transaction, group)
        if ending is not Ending.IN_STEP:
            connection.in_step = False
            self._close(say_quit=ending is Ending.OUT_OF_STEP)

    async def _take_turn(self) -> SMTPConnection:
        """Return a ready connection once the rate limit lets a transaction start.

        The connection is made ready first, then the turn is awaited (a wait
        longer than ``max_idle`` retires the connection, the server may have
        dropped it, and makes a new one). The turn is taken only with the
        connection ready, right before MAIL FROM, so that connecting cannot
        push a start past its turn and bunch it up with the next ones; and a
        turn reserved ahead in shared storage (queue workers) is not missed
        while a connection is being made.
        """
        gate = self._gate
        while True:
            connection = await self._ready_connection()
            if gate is None:
                return connection
            if await gate.wait_ready() > self._limits.max_idle:
                await self._retire()
                connection = await self._ready_connection()
            if gate.try_acquire():
                return connection

    def _may_chain(self) -> bool:
        """Return whether a queued transaction may start now (its turn has come).

        The turn is taken only when one is queued, so that none is wasted.
        """
        gate = self._gate
        return gate is None or (len(self._queue) > 0 and gate.try_acquire())

    def _has_room(self, connection: SMTPConnection) -> bool:
        age = time.monotonic() - connection.opened_at
        return self._started < self._limits.max_messages and age < self._limits.max_age

    async def _ready_connection(self) -> SMTPConnection:
        connection = self._connection
        if connection is not None and not (
            connection.is_usable and self._has_room(connection)
        ):
            await self._retire()
            connection = None
        if connection is None:
            connection = self._new_connection()
            try:
                await connection.open()
            except BaseException:
                # A refused STARTTLS or login leaves a server that still hears.
                connection.close(say_quit=True)
                raise
            self._connection = connection
            self._started = 0
        return connection

    async def _retire(self) -> None:
        """Close the current connection politely (QUIT, its reply briefly awaited)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            if connection.is_usable:
                await connection.quit()
                raise_if_cancelled()
            else:
                connection.close()

    def _close(self, *, say_quit: bool) -> None:
        """Close the current connection at once (QUIT written, not awaited)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close(say_quit=say_quit)

    def _begin(self, transaction: Transaction) -> None:
        transaction.phase = Phase.ENVELOPE
        transaction.deadline = asyncio.get_running_loop().time() + (
            self._message_timeout
        )
        self._started += 1

    def _next_group(
        self, connection: SMTPConnection
    ) -> tuple[Transaction | None, bytes]:
        """Take and begin the next queued transaction this connection has room for.

        A transaction that fails the local checks fails at once, and the next
        one is taken: it costs the session nothing.

        Returns:
            The transaction and its envelope commands, or ``(None, b"")``.
        """
        # Under a rate limit, the next message rides along only on its turn.
        while self._has_room(connection) and self._may_chain():
            transaction = self._queue.take_nowait()
            if transaction is None:
                break
            self._hold(transaction)
            try:
                options, encoding = connection.mail_options(
                    transaction.envelope, transaction.content
                )
                commands = envelope_commands(transaction.envelope, options, encoding)
            except (UnsupportedError, ValueError) as exc:
                transaction.fail(exc)
                continue
            self._begin(transaction)
            return transaction, commands
        return None, b""

    def _hold(self, transaction: Transaction) -> None:
        self._in_exchange = True
        self._held.add(transaction)
        transaction.outcome.add_done_callback(
            lambda _: self._outcome_known(transaction)
        )

    def _outcome_known(self, transaction: Transaction) -> None:
        self._held.discard(transaction)
        self._stop_if_unwanted()

    def _stop_if_unwanted(self) -> None:
        """While the pool closes, stop if every transaction in hand is settled.

        The replies still due then belong to messages whose senders gave up
        (cancelled): waiting up to MAILER_MESSAGE_TIMEOUT for them would only
        delay the close.
        """
        if not (self._closing and self._in_exchange and self.task is not None):
            return
        # _held keeps only the unsettled (see __init__): empty means settled.
        if not self._held:
            self.is_cut_short = True
            self.task.cancel()
