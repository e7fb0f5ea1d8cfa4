"""Log the SMTP dialogue (``mailer send -v``); AUTH is hidden, the password redacted.

Every command the client writes and every reply it reads go to the logger
``mailer.smtp.dialogue`` at DEBUG, one record per line, each prefixed with the
connection (``127.0.0.1:2525#1 C: MAIL FROM:<a@example.test>``). Nothing is
formatted unless a handler wants DEBUG records from it, so a batch pays
nothing when the dialogue is not shown.

What is hidden: the arguments of AUTH and every line sent while a login is
in progress (the base64 of the user name and password), and any form of the
password a server's reply quotes (``mailer.config.secrets``). Message content
is summed up as its size; the headers and body are not logged.

Commands sent one at a time go through ``DialogueSMTP`` (an aiosmtplib
client); pipelined groups are logged by ``mailer.transports.smtp.pipelining``
with ``log_written`` and ``log_reply``.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from mailer.config.secrets import Redactor

logger = logging.getLogger("mailer.smtp.dialogue")
HIDDEN = "[hidden]"
_CONTINUE = 334  # the server waits for more of the login (RFC 4954)
_END_OF_CONTENT = b"\r\n.\r\n"
_numbers = itertools.count(1)


def is_shown() -> bool:
    """Return whether anyone listens to the dialogue (DEBUG on its logger)."""
    return logger.isEnabledFor(logging.DEBUG)


def _name(smtp: aiosmtplib.SMTP) -> str:
    return getattr(smtp, "dialogue_name", f"{smtp.hostname}:{smtp.port}")


def _redactor(smtp: aiosmtplib.SMTP) -> Redactor:
    redactor = getattr(smtp, "redactor", None)
    return redactor if isinstance(redactor, Redactor) else Redactor()


def log_reply(smtp: aiosmtplib.SMTP, reply: SMTPResponse) -> None:
    """Log a reply the client read, each of its lines, the password redacted."""
    if not is_shown():
        return
    text = _redactor(smtp).text(reply.message)
    lines = text.split("\n") or [""]
    for index, line in enumerate(lines):
        separator = " " if index == len(lines) - 1 else "-"
        logger.debug("%s S: %s%s%s", _name(smtp), reply.code, separator, line)


def log_written(smtp: aiosmtplib.SMTP, data: bytes) -> None:
    """Log what the client wrote: each command line, and message content by size.

    ``data`` is a pipelined group: commands, or the end of one message's content
    (up to and including the final ``.``) followed by the next commands.
    """
    if not is_shown():
        return
    end = data.rfind(_END_OF_CONTENT)
    if end >= 0:
        logger.debug(
            "%s C: (message content, %d bytes, then .)",
            _name(smtp),
            end + 2,
        )
        data = data[end + len(_END_OF_CONTENT) :]
    for line in data.split(b"\r\n"):
        if line:
            logger.debug("%s C: %s", _name(smtp), _command_text(line))


def _command_text(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    verb, _, rest = text.partition(" ")
    if verb.upper() == "AUTH":
        mechanism = rest.split(" ", 1)[0]
        return f"AUTH {mechanism} {HIDDEN}".rstrip()
    return text


class DialogueSMTP(aiosmtplib.SMTP):
    """An aiosmtplib client that logs its dialogue when someone listens.

    Args:
        *args: As for ``aiosmtplib.SMTP``.
        redactor: Hides the password in logged replies.
        **kwargs: As for ``aiosmtplib.SMTP``.
    """

    def __init__(self, *args: Any, redactor: Redactor | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.redactor = redactor or Redactor()
        self.dialogue_name = f"{self.hostname}:{self.port}#{next(_numbers)}"
        self._in_login = False

    async def connect(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        """Connect, and log the greeting."""
        if is_shown():
            logger.debug("%s connecting", self.dialogue_name)
        response = await super().connect(*args, **kwargs)
        log_reply(self, response)
        return response

    async def execute_command(self, *args: bytes, **kwargs: Any) -> SMTPResponse:
        """Send one command and log it with its reply (AUTH and login lines hidden)."""
        if is_shown():
            line = b" ".join(args)
            if self._in_login:
                logger.debug("%s C: %s", self.dialogue_name, HIDDEN)
            else:
                logger.debug("%s C: %s", self.dialogue_name, _command_text(line))
        self._in_login = (bool(args) and args[0].upper() == b"AUTH") or self._in_login
        try:
            response = await super().execute_command(*args, **kwargs)
        except aiosmtplib.SMTPException:
            self._in_login = False
            raise
        if response.code != _CONTINUE:
            self._in_login = False
        log_reply(self, response)
        return response

    async def starttls(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        """Upgrade to TLS, and log the exchange."""
        if is_shown():
            logger.debug("%s C: STARTTLS", self.dialogue_name)
        response = await super().starttls(*args, **kwargs)
        log_reply(self, response)
        if is_shown():
            logger.debug("%s (TLS established)", self.dialogue_name)
        return response

    async def data(self, message: str | bytes, /, **kwargs: Any) -> SMTPResponse:
        """Send DATA and the content, and log both (the content by size)."""
        if is_shown():
            logger.debug("%s C: DATA", self.dialogue_name)
            logger.debug(
                "%s C: (message content, %d bytes, then .)",
                self.dialogue_name,
                len(message),
            )
        response = await super().data(message, **kwargs)
        log_reply(self, response)
        return response
