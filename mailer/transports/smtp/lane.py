"""Run one pooled SMTP connection: a task that sends queued transactions in turn.

A lane owns at most one open connection at a time. It takes a transaction from
the pool's queue, opens the connection if it has none (lazily), and sends. When
the server offers PIPELINING (RFC 2920) the lane keeps the connection busy: the
content of one message goes out in the same write as the envelope of the next
queued one, so a steady stream costs one round trip per message instead of four.
Without PIPELINING it sends one command at a time through aiosmtplib.

Connection hygiene lives here too: a connection is closed with QUIT after
``max_messages`` transactions, once older than ``max_age``, or after sitting
``max_idle`` seconds without work. A connection on which a transaction failed
(a timeout, a dropped line, an out-of-place reply, or a refusal) takes no new
message: what was already written on it is finished, then it is closed and
never reused. (A refusal alone would leave the session usable after RSET, as
Postfix and Nodemailer use it; the issue asks for the stricter rule, and it
costs one reconnect per failed message.)

Each Transaction records its Phase: ``DATA`` once its content has been written,
so that a failure from then on is known to be one the server may have delivered.
A lane never retries: a transaction cut short, even one whose envelope only
rode along behind a failed message, fails with its error, and the client's
retry policy decides (every attempt counted, spaced by the backoff).

Timeouts: each reply has ``timeout`` (``MAILER_TIMEOUT``); a transaction as a
whole, from its MAIL FROM to the reply after its content, has
``message_timeout`` (``MAILER_MESSAGE_TIMEOUT``), which alone bounds the wait
for that final reply (the one a server may spend scanning the content).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable

import aiosmtplib

from mailer.exceptions import RecipientsRefusedError, UnsupportedError
from mailer.replies import Reply
from mailer.transports.smtp.connection import (
    Phase,
    SMTPConnection,
    every_recipient_refused,
)
from mailer.transports.smtp.pipelining import (
    CODE_CLOSING,
    CODE_OK,
    CODE_START_INPUT,
    CODE_WILL_FORWARD,
    EnvelopeReplies,
    PipelinedSession,
    envelope_commands,
    wire_content,
)
from mailer.transports.smtp.transactions import (
    PoolLimits,
    Transaction,
    TransactionQueue,
)


class Lane:
    """One connection slot of a pool, and the loop that feeds it transactions.

    Args:
        queue: Where transactions wait.
        new_connection: Makes an unopened SMTPConnection.
        limits: Reuse limits.
        timeout: Seconds to wait for each reply.
        message_timeout: Seconds for a whole transaction, final reply included.
    """

    def __init__(
        self,
        queue: TransactionQueue,
        new_connection: Callable[[], SMTPConnection],
        limits: PoolLimits,
        timeout: float,
        message_timeout: float,
    ) -> None:
        self._queue = queue
        self._new_connection = new_connection
        self._limits = limits
        self._timeout = timeout
        self._message_timeout = message_timeout
        self._connection: SMTPConnection | None = None
        self._started = 0  # transactions begun on the current connection

    async def run(self) -> None:
        """Send queued transactions until the queue is closed and empty."""
        try:
            while True:
                idle_limit = self._limits.max_idle if self._connection else None
                transaction = await self._queue.take(idle_limit)
                if transaction is None:
                    if self._queue.is_closed:
                        break
                    await self._retire()  # idle too long: the server may drop it
                    continue
                await self._send(transaction)
        except BaseException:
            self._drop()
            raise
        await self._retire()

    async def _send(self, transaction: Transaction) -> None:
        if transaction.is_abandoned:
            return
        try:
            connection = await self._ready_connection()
            if connection.supports_pipelining:
                await self._run_pipelined(connection, transaction)
            else:
                await self._run_sequential(connection, transaction)
        except Exception as exc:  # noqa: BLE001 - handed to the sender
            transaction.fail(exc)
        except BaseException:
            transaction.outcome.cancel()
            raise

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
                connection.close()
                raise
            self._connection = connection
            self._started = 0
        return connection

    async def _retire(self) -> None:
        """Close the current connection politely (QUIT)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            if connection.is_usable:
                await connection.quit()
            else:
                connection.close()

    def _drop(self) -> None:
        """Close the current connection at once, without QUIT."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _begin(self, transaction: Transaction) -> None:
        transaction.phase = Phase.ENVELOPE
        transaction.deadline = asyncio.get_running_loop().time() + (
            self._message_timeout
        )
        self._started += 1

    def _next_group(
        self, connection: SMTPConnection
    ) -> tuple[Transaction | None, bytes, bool]:
        """Take the next queued transaction this connection has room for.

        Returns:
            The transaction and its envelope commands (or None), and False if
            the one taken failed its checks: then the connection ends here.
        """
        transaction = self._queue.take_nowait() if self._has_room(connection) else None
        if transaction is None:
            return None, b"", True
        try:
            options, encoding = connection.mail_options(
                transaction.envelope, transaction.content
            )
            commands = envelope_commands(transaction.envelope, options, encoding)
        except (UnsupportedError, ValueError) as exc:
            transaction.fail(exc)
            return None, b"", False
        self._begin(transaction)
        return transaction, commands, True

    async def _run_pipelined(
        self, connection: SMTPConnection, first: Transaction
    ) -> None:
        """Send ``first`` and then, chained, whatever the queue holds."""
        try:
            options, encoding = connection.mail_options(first.envelope, first.content)
            group = envelope_commands(first.envelope, options, encoding)
        except (UnsupportedError, ValueError) as exc:
            self._drop()  # any failure ends the connection, even before a command
            first.fail(exc)
            return
        try:
            session = PipelinedSession(connection.smtp, self._timeout)
        except aiosmtplib.SMTPServerDisconnected as exc:
            self._drop()
            first.fail(exc)
            return
        with session:
            await self._chain(connection, session, first, group)

    async def _chain(
        self,
        connection: SMTPConnection,
        session: PipelinedSession,
        first: Transaction,
        group: bytes,
    ) -> None:
        self._begin(first)
        current: Transaction | None = first  # envelope replies due
        in_data: Transaction | None = None  # content written, final reply due
        clean = True  # no transaction failed: the connection may be reused
        try:
            session.write(group)
            while True:
                if in_data is not None:
                    clean &= await self._read_final(session, in_data)
                    in_data = None
                if current is None:
                    break
                replies = await session.read_envelope_replies(
                    len(current.envelope.rcpt_tos), current.deadline
                )
                failure = self._envelope_failure(connection, current, replies)
                if failure is not None or current.is_abandoned:
                    # Refused (or its sender gave up, DATA being open): the
                    # transaction ends here, and so does the connection.
                    if isinstance(failure, RecipientsRefusedError) and not (
                        replies.data and replies.data.code == CODE_START_INPUT
                    ):
                        # As one command at a time (and aiosmtplib) do: end the
                        # open transaction before leaving.
                        session.write(b"RSET\r\n")
                        await session.read_reply(current.deadline)
                    if failure is not None:
                        current.fail(failure)
                    current, clean = None, False
                    break
                current.start_content()  # raises if the journal cannot note it
                in_data = current
                # A connection that saw a failure takes no new message; what was
                # already written on it is finished first.
                current, commands, checked = (
                    self._next_group(connection) if clean else (None, b"", True)
                )
                clean &= checked
                session.write(wire_content(in_data.content) + commands)
        except Exception as exc:  # noqa: BLE001 - every failure goes to its sender
            # Both the message whose reply was due and the one whose envelope
            # rode behind it end here: each is an attempt, for the client to
            # retry (only the first may have been delivered: Phase.DATA).
            self._drop()
            if in_data is not None:
                in_data.fail(exc)
            if current is not None:
                current.fail(exc if in_data is None else copy.copy(exc))
            return
        except BaseException:
            self._drop()
            for transaction in (in_data, current):
                if transaction is not None:
                    transaction.outcome.cancel()
            raise
        if not clean:
            self._drop()

    async def _read_final(
        self, session: PipelinedSession, transaction: Transaction
    ) -> bool:
        """Read the reply to a message's content; return whether it was accepted.

        Only the transaction's deadline bounds this wait (not ``timeout``): a
        server may take long to scan the content, and giving up here is what
        can make a message be delivered twice.
        """
        final = await session.read_final_reply(transaction.deadline)
        if final.code == CODE_OK:
            transaction.succeed(final)
            return True
        transaction.fail(aiosmtplib.SMTPDataError(final.code, final.message))
        if final.code == CODE_CLOSING:
            raise aiosmtplib.SMTPServerDisconnected(final.message)
        return False

    @staticmethod
    def _envelope_failure(
        connection: SMTPConnection, transaction: Transaction, replies: EnvelopeReplies
    ) -> BaseException | None:
        """Return the error for a refused envelope, or None when DATA may go on."""
        envelope = transaction.envelope
        if replies.closing is not None:
            # 421: the server is ending the session (RFC 5321 3.8).
            return aiosmtplib.SMTPResponseException(
                replies.closing.code, replies.closing.message
            )
        if replies.mail.code != CODE_OK:
            return aiosmtplib.SMTPSenderRefused(
                replies.mail.code, replies.mail.message, envelope.mail_from
            )
        accepted: list[str] = []
        refused: dict[str, Reply] = {}
        for recipient, reply in zip(envelope.rcpt_tos, replies.rcpts, strict=True):
            if reply.code in (CODE_OK, CODE_WILL_FORWARD):
                accepted.append(recipient)
            else:
                refused[recipient] = Reply(reply.code, reply.message)
        transaction.accepted, transaction.refused = tuple(accepted), refused
        if not accepted:
            return every_recipient_refused(connection.server, refused)
        data = replies.data
        if data is not None and data.code != CODE_START_INPUT:
            return aiosmtplib.SMTPDataError(data.code, data.message)
        return None  # (data is only missing after a 421, handled above)

    async def _run_sequential(
        self, connection: SMTPConnection, transaction: Transaction
    ) -> None:
        """Send one transaction a command at a time (the server lacks PIPELINING)."""
        self._begin(transaction)
        try:
            async with asyncio.timeout_at(transaction.deadline):
                delivery = await connection.send(
                    transaction.envelope,
                    transaction.content,
                    before_content=transaction.start_content,
                )
        except Exception as exc:  # noqa: BLE001 - every failure goes to its sender
            if connection.phase is not Phase.IDLE:
                transaction.phase = connection.phase
            self._drop()
            transaction.fail(exc)
            return
        except BaseException:
            self._drop()
            transaction.outcome.cancel()
            raise
        if not transaction.outcome.done():
            transaction.outcome.set_result(delivery)
