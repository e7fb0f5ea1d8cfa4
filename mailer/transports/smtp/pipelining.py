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
from mailer.transports.smtp.dialogue import log_reply, log_written

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
    mail = b"MAIL FROM:<" + envelope.mail_from.encode(encoding) + b">"
    for option in options:
        mail += b" " + option.encode("ascii")
    lines = [mail]
    lines.extend(b"RCPT TO:<" + r.encode(encoding) + b">" for r in envelope.rcpt_tos)
    lines.append(b"DATA")
    for line in lines:
        if _CONTROL.search(line):
            raise ValueError("an SMTP command argument holds a control character")
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
    """

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._failure: Exception | None = None
        self._arrived: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        """Keep the bytes and parse every complete reply in them."""
        self._buffer.extend(data)
        try:
            while (reply := self._next_reply()) is not None:
                self._replies.append(reply)
        except aiosmtplib.SMTPResponseException as exc:
            self._fail(exc)
        if len(self._buffer) > MAX_REPLY_LENGTH:
            self._fail(
                aiosmtplib.SMTPResponseException(INVALID_REPLY, "Response too long")
            )
        self._wake()

    def _next_reply(self) -> SMTPResponse | None:
        lines: list[bytes] = []
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) >= 0:
            line = bytes(self._buffer[offset : end + 1])
            offset = end + 1
            if len(line) > MAX_LINE_LENGTH or not line[:3].isdigit():
                raise aiosmtplib.SMTPResponseException(
                    INVALID_REPLY, f"Malformed SMTP response line: {line[:80]!r}"
                )
            lines.append(line)
            if line[3:4] != b"-":
                del self._buffer[:offset]
                text = b"\n".join(part[4:].strip(b" \t\r\n") for part in lines)
                return SMTPResponse(
                    int(lines[-1][:3]), text.decode("utf-8", "surrogateescape")
                )
        return None

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

    async def read(self, until: float) -> SMTPResponse:
        """Return the next reply, waiting for it until ``until`` (loop time).

        Raises:
            SMTPServerDisconnected: The server closed the connection.
            SMTPReadTimeoutError: No reply in time.
            SMTPResponseException: The reply is malformed (code -1).
        """
        loop = asyncio.get_running_loop()
        while not self._replies:
            if self._failure is not None:
                raise self._failure
            self._arrived = loop.create_future()
            try:
                async with asyncio.timeout_at(until):
                    await self._arrived
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from None
            finally:
                self._arrived = None
        return self._replies.popleft()


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

    def __enter__(self) -> PipelinedSession:
        self._transport.set_protocol(self._reader)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Bytes left unread are unsolicited: dropped, as aiosmtplib would.
        if self._transport.get_protocol() is self._reader:
            self._transport.set_protocol(self._inner)

    def write(self, data: bytes) -> None:
        """Send ``data`` (commands and/or content) in one write.

        Raises:
            SMTPServerDisconnected: The connection is closed.
        """
        if self._transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        log_written(self._smtp, data)  # -v: the dialogue, when shown
        self._transport.write(data)

    async def read_reply(self, deadline: float) -> SMTPResponse:
        """Return the next reply, in the order the commands were written.

        Args:
            deadline: The transaction's deadline (loop time); the wait also
                stops after ``timeout``, whichever comes first.
        """
        until = asyncio.get_running_loop().time() + self._timeout
        reply = await self._reader.read(min(until, deadline))
        log_reply(self._smtp, reply)
        return reply

    async def read_final_reply(self, deadline: float) -> SMTPResponse:
        """Return the reply to a message's content, waiting until ``deadline``."""
        reply = await self._reader.read(deadline)
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
