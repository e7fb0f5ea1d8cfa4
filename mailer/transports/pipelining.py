"""Write SMTP command groups and read their replies in order (PIPELINING, RFC 2920).

Without PIPELINING a client waits for the reply to each command: MAIL, every
RCPT, DATA and the content each cost a round trip. With it, ``MAIL FROM``, every
``RCPT TO`` and ``DATA`` go out in one write, and the replies are read after and
matched to the commands by position (RFC 2920 3.1: "MUST check ALL statuses").
RFC 2920 also lets the content of one message open the next group, so a lane
sends "content of message k + envelope of message k+1" in one write: one round
trip per message in a steady stream (see ``lane.py``).

This module only frames bytes and reads replies; it runs on the aiosmtplib
connection the session was opened with (its ``SMTPProtocol``), not on a second
SMTP stack. aiosmtplib reads exactly one reply per command it writes, so two of
its protocol's internals are used here (aiosmtplib is pinned below 6, and the
integration tests run this path against aiosmtpd):

* ``_response_pending`` must be true while replies are due, or the protocol
  drops arriving bytes as unsolicited;
* ``_read_response_from_buffer()`` returns a reply that arrived in the same
  packet as the one before it: the protocol parses only when bytes arrive.

The second is safe because the caller never awaits anything between writing a
group and reading its last reply except ``read_reply`` itself, so every byte
arrives while a read is pending and lands in the protocol's buffer in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from mailer.message import Envelope

CRLF = b"\r\n"
# Lone CR or LF become CRLF on the wire, as aiosmtplib's data() does.
_LINE_ENDS = re.compile(rb"\r\n|\r(?!\n)|\n")
# RFC 5321 4.5.2: a line that starts with "." gets one more "." in front.
_LEADING_DOT = re.compile(rb"(?m)^\.")
# A command argument with a control character could end the command early.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")

CODE_OK = 250
CODE_WILL_FORWARD = 251
CODE_START_INPUT = 354
CODE_CLOSING = 421


def wire_content(content: bytes) -> bytes:
    """Return the message content as sent after DATA: CRLF, dot-stuffed, ``.`` line.

    Args:
        content: The serialised message.

    Returns:
        The bytes to write after the 354 reply, ending with ``CRLF.CRLF``.
    """
    normal = _LINE_ENDS.sub(CRLF, content)
    if not normal.endswith(CRLF):
        normal += CRLF
    return _LEADING_DOT.sub(b"..", normal) + b".\r\n"


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
    """The replies to one pipelined ``MAIL``, ``RCPT``... and ``DATA`` group."""

    mail: SMTPResponse
    rcpts: tuple[SMTPResponse, ...]
    data: SMTPResponse

    @property
    def closing(self) -> SMTPResponse | None:
        """Return a 421 among the replies: the server is ending the session."""
        for reply in (self.mail, *self.rcpts, self.data):
            if reply.code == CODE_CLOSING:
                return reply
        return None


class PipelinedSession:
    """Write command groups on an open aiosmtplib connection and read the replies.

    Args:
        smtp: A connected aiosmtplib client whose server offered PIPELINING.
        timeout: Seconds to wait for each reply.
    """

    def __init__(self, smtp: aiosmtplib.SMTP, timeout: float) -> None:
        self._smtp = smtp
        self._timeout = timeout

    def _protocol(self) -> aiosmtplib.protocol.SMTPProtocol:
        protocol = self._smtp.protocol
        if protocol is None or not protocol.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        return protocol

    def write(self, data: bytes) -> None:
        """Send ``data`` (commands and/or content) in one write; replies become due.

        Raises:
            SMTPServerDisconnected: The connection is closed.
        """
        protocol = self._protocol()
        protocol._response_pending = True  # see the module docstring
        protocol.write(data)

    async def read_reply(self) -> SMTPResponse:
        """Return the next reply, in the order the commands were written.

        Raises:
            SMTPServerDisconnected: The server closed the connection.
            SMTPReadTimeoutError: No reply within the timeout.
            SMTPResponseException: The reply is malformed (code -1).
        """
        protocol = self._smtp.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        buffered = protocol._read_response_from_buffer()  # see the module docstring
        if buffered is not None:
            return buffered
        return await protocol.read_response(timeout=self._timeout)

    async def read_envelope_replies(self, recipients: int) -> EnvelopeReplies:
        """Read the replies to MAIL, ``recipients`` RCPTs and DATA."""
        mail = await self.read_reply()
        rcpts = [await self.read_reply() for _ in range(recipients)]
        data = await self.read_reply()
        return EnvelopeReplies(mail, tuple(rcpts), data)
