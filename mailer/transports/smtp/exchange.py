"""Run mail transactions on one open session and keep its replies in step.

An ``Exchange`` sends a transaction, and with PIPELINING chains the next ones
behind it: the content of one message goes out in the same write as the
envelope of the next (RFC 2920 3.1). Every reply is read in the order of the
commands and checked against what that command can be answered.

A refusal leaves the session in a known state, so the session goes on: a 4xx
or 5xx to MAIL, to every RCPT, or to DATA ends that transaction with RSET (RFC
5321 4.1.1.5), written in front of the next envelope under PIPELINING (RSET may
open a group, RFC 2920 3.1) so it costs no round trip; a refusal of the content
needs nothing (the final reply ends the transaction). The session's state is
unknown after a timeout, a lost or malformed reply, or a reply of the wrong
kind (a 354 to MAIL, a 250 to DATA): then the exchange stops, and the lane
closes the connection.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from mailer.content.message import Envelope
from mailer.replies import Reply, is_refusal, settles_content
from mailer.transports.smtp.connection import Phase, every_recipient_refused
from mailer.transports.smtp.pipelining import (
    CODE_CLOSING,
    CODE_OK,
    CODE_START_INPUT,
    CODE_WILL_FORWARD,
    CRLF,
    EnvelopeReplies,
    PipelinedSession,
    wire_content,
)
from mailer.transports.smtp.transactions import Transaction

RSET = b"RSET" + CRLF
# The next transaction a connection has room for, and its envelope commands.
NextGroup = Callable[[], tuple[Transaction | None, bytes]]


class Ending(enum.Enum):
    """How an exchange left the session."""

    IN_STEP = "in step"  # idle, every reply read: the connection can be reused
    OUT_OF_STEP = "out of step"  # state unknown: close, with QUIT
    DATA_OPEN = "data open"  # the server waits for content: close, without QUIT


class Exchange:
    """Send transactions on one session and read every reply in order.

    Args:
        session: The session's transport, lent to a reply reader.
        server: ``host:port``, for the messages.
        pipelining: Group commands (the server offered PIPELINING); otherwise
            one command at a time, each after the last reply.
        next_group: With PIPELINING, returns the next transaction to chain
            (already begun) and its commands, or ``(None, b"")``.
    """

    def __init__(
        self,
        session: PipelinedSession,
        *,
        server: str,
        pipelining: bool,
        next_group: NextGroup,
    ) -> None:
        self._session = session
        self._server = server
        self._pipelining = pipelining
        self._next_group = next_group if pipelining else _nothing_next

    async def run(self, first: Transaction, group: bytes) -> Ending:
        """Send ``first`` (begun, its commands in ``group``) and whatever is chained.

        Every transaction handed in ends resolved (or abandoned by its sender).

        Returns:
            How the session was left.
        """
        session = self._session
        current: Transaction | None = first  # envelope replies due
        in_data: Transaction | None = None  # content written, final reply due
        rset_due = False
        try:
            if self._pipelining:
                session.write(group)
            while True:
                if in_data is not None:
                    await self._read_final(in_data)
                    in_data = None
                if rset_due:
                    await self._read_rset()
                    rset_due = False
                if current is None:
                    return Ending.IN_STEP
                replies = await self._envelope_replies(current, group)
                failure = envelope_failure(self._server, current, replies)
                data_open = replies.data is not None and (
                    replies.data.code == CODE_START_INPUT
                )
                if failure is None and not current.is_abandoned:
                    try:
                        # Phase.DATA, after the journal noted it: the last exit.
                        current.start_content()
                    except Exception as exc:  # noqa: BLE001 - to its sender
                        current.fail(exc)  # nothing of the content was written
                        return Ending.DATA_OPEN
                    in_data = current
                    current, group = self._next_group()
                    session.write(wire_content(in_data.content, group))
                    continue
                # Refused, or its sender gave up before the content: the
                # transaction ends here, and the session goes on.
                if failure is not None:
                    current.fail(failure)
                if replies.closing is not None:
                    return Ending.OUT_OF_STEP  # 421: the server is leaving
                if data_open:
                    # 354 although nothing may be sent: only closing ends it.
                    return Ending.DATA_OPEN
                current, group = self._next_group()
                session.write(RSET + (group if self._pipelining else b""))
                rset_due = True
        except Exception as exc:  # noqa: BLE001 - every failure goes to its sender
            # Both the message whose reply was due and the one whose envelope
            # rode behind it end here: each is an attempt, for the client to
            # retry (only the first may have been delivered: Phase.DATA).
            if in_data is not None:
                in_data.fail(exc)
            if current is not None:
                current.fail(exc if in_data is None else copy.copy(exc))
            return Ending.OUT_OF_STEP
        except BaseException:
            for transaction in (in_data, current):
                if transaction is not None:
                    transaction.outcome.cancel()
            raise

    async def _envelope_replies(
        self, transaction: Transaction, group: bytes
    ) -> EnvelopeReplies:
        if self._pipelining:
            return await self._session.read_envelope_replies(
                len(transaction.envelope.rcpt_tos), transaction.deadline
            )
        return await self._session.send_envelope_in_turn(group, transaction.deadline)

    async def _read_final(self, transaction: Transaction) -> None:
        """Read the reply to a message's content and resolve the transaction.

        Only the transaction's deadline bounds this wait (not ``timeout``): a
        server may take long to scan the content, and giving up here is what
        can make a message be delivered twice.

        Raises:
            SMTPServerDisconnected: A 421: the server is closing the session.
            SMTPResponseException: The reply was malformed or out of step; the
                message may have been stored (it stays in Phase.DATA).
        """
        final = await self._session.read_final_reply(transaction.deadline)
        if not settles_content(Reply(final.code, final.message)):
            raise _out_of_step(final)
        transaction.phase = Phase.ANSWERED
        if final.code == CODE_OK:
            transaction.succeed(final)
            return
        transaction.fail(aiosmtplib.SMTPDataError(final.code, final.message))
        if final.code == CODE_CLOSING:
            raise aiosmtplib.SMTPServerDisconnected(final.message)

    async def _read_rset(self) -> None:
        # RSET has the command timeout alone: no transaction's deadline.
        reply = await self._session.read_reply(float("inf"))
        if reply.code != CODE_OK:
            raise _out_of_step(reply)


def envelope_failure(
    server: str, transaction: Transaction, replies: EnvelopeReplies
) -> BaseException | None:
    """Return the error for a refused envelope, or None when DATA may go on.

    Records the accepted and refused recipients on the transaction.

    Raises:
        SMTPResponseException: A reply no server gives to that command in step
            (a 354 to MAIL, a 250 to DATA): the session's state is unknown.
    """
    envelope: Envelope = transaction.envelope
    if replies.closing is not None:
        # 421: the server is ending the session (RFC 5321 3.8).
        return aiosmtplib.SMTPResponseException(
            replies.closing.code, replies.closing.message
        )
    mail = replies.mail
    if mail.code != CODE_OK:
        if not is_refusal(Reply(mail.code, mail.message)):
            raise _out_of_step(mail)
        return aiosmtplib.SMTPSenderRefused(mail.code, mail.message, envelope.mail_from)
    accepted: list[str] = []
    refused: dict[str, Reply] = {}
    for recipient, reply in zip(envelope.rcpt_tos, replies.rcpts, strict=True):
        answer = Reply(reply.code, reply.message)
        if reply.code in (CODE_OK, CODE_WILL_FORWARD):
            accepted.append(recipient)
        elif is_refusal(answer):
            refused[recipient] = answer
        else:
            raise _out_of_step(reply)
    transaction.accepted, transaction.refused = tuple(accepted), refused
    data = replies.data
    if data is not None and data.code != CODE_START_INPUT:
        if not is_refusal(Reply(data.code, data.message)):
            raise _out_of_step(data)
        if accepted:
            return aiosmtplib.SMTPDataError(data.code, data.message)
    if not accepted:
        return every_recipient_refused(server, refused)
    return None


def _out_of_step(reply: SMTPResponse) -> aiosmtplib.SMTPResponseException:
    return aiosmtplib.SMTPResponseException(reply.code, reply.message)


def _nothing_next() -> tuple[Transaction | None, bytes]:
    return None, b""
