"""Write SMTP command groups and read their replies in order (PIPELINING, RFC 2920).

Without PIPELINING a client waits for the reply to each command: MAIL, every
RCPT, DATA and the content each cost a round trip. With it, ``MAIL FROM``, every
``RCPT TO`` and ``DATA`` go out in one write, and the replies are read after and
matched to the commands by position (RFC 2920 3.1: "MUST check ALL statuses").
RFC 2920 also lets the content of one message open the next group, so a lane
sends "content of message k + envelope of message k+1" in one write: one round
trip per message in a steady stream (see ``lane.py``).

This runs on the aiosmtplib connection the session was opened with (greeting,
EHLO, STARTTLS, AUTH and the polite QUIT stay aiosmtplib's). The transactions
themselves (MAIL, RCPT, DATA, the content, RSET) are written and read here, with
or without PIPELINING: aiosmtplib's protocol expects one reply per command it
wrote, and drops bytes that arrive while a parsed reply waits to be picked up;
with several replies in flight, that loses replies (measured: 1 in 100
transactions against aiosmtpd, which writes each reply separately). Its reads
also go through ``asyncio.wait_for``, which on Python 3.11 can swallow a
cancellation. So for the length of an exchange a ``ReplyReader`` takes the
connection's transport over (``transport.set_protocol``, public asyncio API),
keeps every byte, hands replies out in order, and passes connection events on
to aiosmtplib's protocol, which gets the transport back afterwards.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from mailer.content.message import Envelope
from mailer.transports.smtp.dialogue import is_shown, log_reply, log_written

CRLF = b"\r\n"
# Lone CR or LF become CRLF on the wire, as aiosmtplib's data() does.
_LINE_ENDS = re.compile(rb"\r\n|\r(?!\n)|\n")
# A command argument with a control character could end the command early.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")

CODE_OK = 250
CODE_WILL_FORWARD = 251
CODE_START_INPUT = 354
CODE_CLOSING = 421
INVALID_REPLY = -1
# The limits aiosmtplib applies to replies (5.1.2): a line, and a whole reply.
MAX_LINE_LENGTH = 8192
MAX_REPLY_LENGTH = 4 * MAX_LINE_LENGTH


def wire_content(content: bytes, after: bytes = b"") -> bytes:
    """Return the message content as sent after DATA: CRLF, dot-stuffed, ``.`` line.

    Args:
        content: The serialised message.
        after: Commands written in the same write (the next envelope).

    Returns:
        The bytes to write after the 354 reply, ending with ``CRLF.CRLF``
        (and ``after``).
    """
    crlf = content.count(CRLF)
    if content.count(b"\r") == crlf == content.count(b"\n"):
        normal = content  # the builder's output: CRLF only, no rewrite needed
    else:
        normal = _LINE_ENDS.sub(CRLF, content)
    if not normal.endswith(CRLF):
        normal += CRLF
    # RFC 5321 4.5.2: a line that starts with "." gets one more "." in front;
    # with CRLF line ends, such a line follows "\n" or opens the content.
    if normal.startswith(b"."):
        normal = b"." + normal
    if b"\n." in normal:
        normal = normal.replace(b"\n.", b"\n..")
    # One copy of the content, not three: with attachments it is megabytes,
    # and every message in flight holds its copies at once.
    return b"".join((normal, b".\r\n", after))


def envelope_commands(envelope: Envelope, options: list[str], encoding: str) -> bytes:
    """Return ``MAIL FROM``, one ``RCPT TO`` per recipient and ``DATA``, as one group.

    Args:
        envelope: The sender and recipients (already validated).
        options: MAIL FROM parameters (``SIZE=``, ``SMTPUTF8``, ``BODY=8BITMIME``).
        encoding: ``utf-8`` with SMTPUTF8, else ``ascii``.

    Raises:
        ValueError: An address or option holds a control character (validated
            addresses never do; this is the last line of defence).
    """
    recipients = [r.encode(encoding) for r in envelope.rcpt_tos]
    mail = b"MAIL FROM:<" + envelope.mail_from.encode(encoding) + b">"
    if options:
        mail += b" " + " ".join(options).encode("ascii")
    # One search over every argument (a space cannot end a command early).
    arguments = b" ".join((mail, *recipients))
    if _CONTROL.search(arguments):
        raise ValueError("an SMTP command argument holds a control character")
    lines = [mail, *(b"RCPT TO:<" + r + b">" for r in recipients), b"DATA"]
    return CRLF.join(lines) + CRLF


@dataclass(frozen=True, slots=True)
class EnvelopeReplies:
    """The replies to one ``MAIL``, ``RCPT``... and ``DATA`` group.

    Reading stops at a 421 (the server is closing and will answer nothing
    more): the replies after it are missing, ``data`` is then None. Sent one
    command at a time, the group also stops after a refused MAIL (no ``rcpts``)
    or when every recipient was refused (no ``data``).
    """

    mail: SMTPResponse
    rcpts: tuple[SMTPResponse, ...]
    data: SMTPResponse | None

    @property
    def closing(self) -> SMTPResponse | None:
        """Return a 421 among the replies: the server is ending the session."""
        for reply in (self.mail, *self.rcpts, self.data):
            if reply is not None and reply.code == CODE_CLOSING:
                return reply
        return None


class ReplyReader(asyncio.Protocol):
    """Collect every reply from a transport, in order, while replies are due.

    Connection events (loss, EOF, write flow control) are passed on to the
    protocol the transport had, so aiosmtplib closes its side as usual.

    Replies are parsed as the bytes arrive, every complete one of a read at
    once (a steady pipelined stream brings four in one read: the final reply
    of one message and the envelope replies of the next).
    """

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._tail = b""  # the start of a line not yet ended
        self._lines: list[bytes] = []  # the lines so far of a multi-line reply
        self._held = 0  # their length: with the tail, what a reply holds so far
        self._replies: deque[SMTPResponse] = deque()
        self._failure: Exception | None = None
        self._arrived: asyncio.Future[None] | None = None
        # One timer serves every wait: see _watch().
        self._until = float("inf")
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def data_received(self, data: bytes) -> None:
        """Keep the bytes and parse every complete reply in them."""
        if self._failure is None:
            self._parse(self._tail + data if self._tail else data)
        self._wake()

    def _parse(self, buffer: bytes) -> None:
        start = 0
        find = buffer.find
        replies = self._replies
        while (end := find(b"\n", start)) >= 0:
            stop = end + 1
            code = buffer[start : start + 3]
            if stop - start > MAX_LINE_LENGTH or not code.isdigit():
                self._fail(
                    aiosmtplib.SMTPResponseException(
                        INVALID_REPLY,
                        f"Malformed SMTP response line: {buffer[start:stop][:80]!r}",
                    )
                )
                return
            if buffer[start + 3 : start + 4] == b"-":
                self._lines.append(buffer[start:stop])
                self._held += stop - start
            elif self._lines:
                lines = self._lines
                lines.append(buffer[start:stop])
                text = b"\n".join(part[4:].strip(b" \t\r\n") for part in lines)
                replies.append(
                    SMTPResponse(int(code), text.decode("utf-8", "surrogateescape"))
                )
                self._lines = []
                self._held = 0
            else:
                text = buffer[start + 4 : stop].strip(b" \t\r\n")
                replies.append(
                    SMTPResponse(int(code), text.decode("utf-8", "surrogateescape"))
                )
            start = stop
        self._tail = buffer[start:]
        if len(self._tail) + self._held > MAX_REPLY_LENGTH:
            self._fail(
                aiosmtplib.SMTPResponseException(INVALID_REPLY, "Response too long")
            )

    def _fail(self, error: Exception) -> None:
        if self._failure is None:
            self._failure = error

    def _wake(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    def eof_received(self) -> bool | None:
        """Note the end of the stream; aiosmtplib's protocol decides the rest."""
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        self._wake()
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the reads still due and tell aiosmtplib the connection is gone."""
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)
        self._wake()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """Pass write flow control on to aiosmtplib's protocol."""
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        """Pass write flow control on to aiosmtplib's protocol."""
        self._inner.resume_writing()

    def next_ready(self) -> SMTPResponse | None:
        """Return the next reply if it has arrived already, without waiting."""
        return self._replies.popleft() if self._replies else None

    async def read(self, until: float) -> SMTPResponse:
        """Return the next reply, waiting for it until ``until`` (loop time).

        Raises:
            SMTPServerDisconnected: The server closed the connection.
            SMTPReadTimeoutError: No reply in time.
            SMTPResponseException: The reply is malformed (code -1).
        """
        replies = self._replies
        while not replies:
            if self._failure is not None:
                raise self._failure
            arrived = asyncio.get_running_loop().create_future()
            self._arrived = arrived
            self._watch(arrived.get_loop(), until)
            try:
                await arrived
            finally:
                self._arrived = None
        return replies.popleft()

    def _watch(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        """Time the current wait out at ``until``.

        A timer already due no later is kept: when it fires it looks at the
        wait in progress then, and sets itself again for that wait's own end.
        In a steady stream each wait ends later than the last (``until`` is
        now + MAILER_TIMEOUT), so this costs one timer per MAILER_TIMEOUT
        seconds instead of one per reply.
        """
        self._until = until
        if until == float("inf"):
            return
        if self._timer is not None:
            if self._timer_at <= until:
                return
            self._timer.cancel()
        self._timer = loop.call_at(until, self._time_out, loop)
        self._timer_at = until

    def _time_out(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._timer_at = float("inf")
        arrived = self._arrived
        if arrived is None or arrived.done():
            return
        if loop.time() < self._until:
            self._watch(loop, self._until)  # this wait ends later: wait on
            return
        arrived.set_exception(
            aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
        )

    def close(self) -> None:
        """Drop the timer (the exchange is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = float("inf")


class PipelinedSession:
    """Write command groups on an open aiosmtplib connection and read the replies.

    Use it as a context manager around one pipelined exchange: it lends the
    connection's transport to a ReplyReader and gives it back on exit.

    Args:
        smtp: A connected aiosmtplib client whose server offered PIPELINING.
        timeout: Seconds to wait for each reply (``MAILER_TIMEOUT``).
    """

    def __init__(self, smtp: aiosmtplib.SMTP, timeout: float) -> None:
        protocol = smtp.protocol
        transport = None if protocol is None else protocol.transport
        if protocol is None or not isinstance(transport, asyncio.Transport):
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._transport: asyncio.Transport = transport
        self._inner: asyncio.Protocol = protocol
        self._smtp = smtp
        self._timeout = timeout
        self._reader = ReplyReader(protocol)
        # Whether -v shows the dialogue: asked once per exchange, not per line.
        self._shown = is_shown()

    def __enter__(self) -> PipelinedSession:
        self._transport.set_protocol(self._reader)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Bytes left unread are unsolicited: dropped, as aiosmtplib would.
        self._reader.close()
        if self._transport.get_protocol() is self._reader:
            self._transport.set_protocol(self._inner)

    def write(self, data: bytes) -> None:
        """Send ``data`` (commands and/or content) in one write.

        Raises:
            SMTPServerDisconnected: The connection is closed.
        """
        if self._transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        if self._shown:
            log_written(self._smtp, data)  # -v: the dialogue
        self._transport.write(data)

    async def read_reply(self, deadline: float) -> SMTPResponse:
        """Return the next reply, in the order the commands were written.

        Args:
            deadline: The transaction's deadline (loop time); the wait also
                stops after ``timeout``, whichever comes first.
        """
        reply = self._reader.next_ready()
        if reply is None:
            until = asyncio.get_running_loop().time() + self._timeout
            reply = await self._reader.read(min(until, deadline))
        if self._shown:
            log_reply(self._smtp, reply)
        return reply

    async def read_final_reply(self, deadline: float) -> SMTPResponse:
        """Return the reply to a message's content, waiting until ``deadline``."""
        reply = await self._reader.read(deadline)
        if self._shown:
            log_reply(self._smtp, reply)
        return reply

    async def read_envelope_replies(
        self, recipients: int, deadline: float
    ) -> EnvelopeReplies:
        """Read the replies to MAIL, ``recipients`` RCPTs and DATA (up to a 421)."""
        mail = await self.read_reply(deadline)
        rcpts: list[SMTPResponse] = []
        if mail.code == CODE_CLOSING:
            return EnvelopeReplies(mail, (), None)
        for _ in range(recipients):
            rcpts.append(await self.read_reply(deadline))
            if rcpts[-1].code == CODE_CLOSING:
                return EnvelopeReplies(mail, tuple(rcpts), None)
        return EnvelopeReplies(mail, tuple(rcpts), await self.read_reply(deadline))

    async def send_envelope_in_turn(
        self, group: bytes, deadline: float
    ) -> EnvelopeReplies:
        """Send MAIL, each RCPT and DATA one at a time, each after the last reply.

        For a server without PIPELINING. It stops early as a client must: no
        RCPT after a refused MAIL, no DATA when every recipient was refused,
        nothing after a 421.

        Args:
            group: The commands, as ``envelope_commands`` makes them.
            deadline: The transaction's deadline (loop time).
        """
        mail_line, *rcpt_lines, data_line = group.split(CRLF)[:-1]
        self.write(mail_line + CRLF)
        mail = await self.read_reply(deadline)
        if mail.code != CODE_OK:
            return EnvelopeReplies(mail, (), None)
        rcpts: list[SMTPResponse] = []
        for line in rcpt_lines:
            self.write(line + CRLF)
            rcpts.append(await self.read_reply(deadline))
            if rcpts[-1].code == CODE_CLOSING:
                return EnvelopeReplies(mail, tuple(rcpts), None)
        if not any(r.code in (CODE_OK, CODE_WILL_FORWARD) for r in rcpts):
            return EnvelopeReplies(mail, tuple(rcpts), None)
        self.write(data_line + CRLF)
        return EnvelopeReplies(mail, tuple(rcpts), await self.read_reply(deadline))
