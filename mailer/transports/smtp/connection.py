"""Open one SMTP session (socket, TLS policy, greeting, login) and close it."""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass

import aiosmtplib

from mailer.config.secrets import Redactor
from mailer.config.settings import MailerSettings
from mailer.content.message import Envelope
from mailer.exceptions import RecipientsRefusedError, UnsupportedError
from mailer.replies import RecipientStatus, Reply, classify_reply
from mailer.transports.smtp.dialogue import DialogueSMTP
from mailer.transports.smtp.greeting import greet
from mailer.transports.smtp.limits import check_server_size, server_size_limit
from mailer.transports.smtp.login import log_in
from mailer.transports.smtp.sockets import open_socket
from mailer.transports.smtp.tls import TLSPolicy

# Closing politely waits this long for the reply to QUIT (RFC 5321 4.1.1.10
# asks the client to wait for it), never MAILER_TIMEOUT: a server that does not
# answer QUIT must not add half a minute to every run.
QUIT_TIMEOUT = 3.0
QUIT = b"QUIT\r\n"


class Phase(enum.Enum):
    """Where a transaction stands: decides whether a failure may have delivered."""

    IDLE = "idle"
    ENVELOPE = "envelope"  # MAIL/RCPT: nothing can have been delivered yet
    DATA = "data"  # content sent or being sent: the server may have accepted it
    ANSWERED = "answered"  # a well-formed reply to the content: the outcome is known


class SMTPConnection:
    """One SMTP session, reused for many messages one after the other."""

    def __init__(self, settings: MailerSettings) -> None:
        self.server = f"{settings.smtp_host}:{settings.port}"
        self._settings = settings
        # start_tls is False: the TLS policy (tls.py) decides on STARTTLS
        # itself. aiosmtplib's None would mean "upgrade if offered", which
        # silently continues in clear (AUTH included) when a server, or an
        # attacker in the middle, hides STARTTLS.
        self._smtp: aiosmtplib.SMTP = DialogueSMTP(
            redactor=Redactor.from_settings(settings),
            hostname=settings.smtp_host,
            port=settings.port,
            use_tls=settings.tls_mode == "tls",
            start_tls=False,
            validate_certs=True,
            cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
            timeout=settings.timeout,
            local_hostname=settings.smtp_local_hostname,
        )
        # False once a transaction failed in a way that leaves the server's
        # state unknown (a timeout, a lost or malformed reply): never reused.
        self.in_step = True
        self.opened_at = 0.0
        self._offered: _Extensions | None = None

    @property
    def smtp(self) -> aiosmtplib.SMTP:
        """Return the aiosmtplib client (transactions are written through it)."""
        return self._smtp

    @property
    def supports_pipelining(self) -> bool:
        """Return whether the server offered PIPELINING (RFC 2920) in EHLO."""
        return self._smtp.supports_extension("pipelining")

    @property
    def is_usable(self) -> bool:
        """Return whether the session is still open and in step with the server."""
        return self._smtp.is_connected and self.in_step

    async def open(self) -> None:
        """Connect, secure the session as the TLS policy says, greet, and log in.

        The TCP connect and the greeting have their own timeouts
        (``MAILER_CONNECT_TIMEOUT``, ``MAILER_GREETING_TIMEOUT``); each command
        after them has ``MAILER_TIMEOUT``.
        """
        settings = self._settings
        sock = await open_socket(
            settings.smtp_host, settings.port, limit=settings.connect_timeout
        )
        # aiosmtplib owns the socket from here, and closes it if connect fails.
        await TLSPolicy.from_settings(settings).connect(
            self._smtp,
            server=self.server,
            sock=sock,
            greeting_timeout=settings.greeting_timeout,
        )
        if self._smtp.is_ehlo_or_helo_needed:
            # After STARTTLS the extensions must be asked for again (RFC 3207 4.2);
            # AUTH, SIZE and SMTPUTF8 checks below need them.
            await greet(self._smtp, server=self.server)
        self.opened_at = time.monotonic()
        await log_in(self._smtp, self._settings, server=self.server)

    def mail_options(self, envelope: Envelope, content: bytes) -> tuple[list[str], str]:
        """Check that the message may go out, then return MAIL FROM's parameters.

        Called before anything of the transaction is written, so a message that
        fails these checks costs neither a command nor the connection.

        Returns:
            The MAIL FROM parameters and the encoding of the envelope addresses.

        Raises:
            HeaderInjectionError: An address could break the command line.
            UnsupportedError: The message needs SMTPUTF8 and the server lacks
                it, or it is larger than the server's SIZE.
        """
        envelope.check_sendable()
        extensions = self._extensions()
        if extensions.size_limit is not None:
            check_server_size(self._smtp, content, server=self.server)
        options: list[str] = []
        encoding = "ascii"
        if envelope.smtputf8:
            if not extensions.smtputf8:
                raise UnsupportedError(
                    f"{self.server} does not support SMTPUTF8, which a non-ASCII "
                    "address needs; nothing was sent"
                )
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if extensions.size:
            options.append(f"SIZE={len(content)}")
        if extensions.eightbitmime and not content.isascii():
            options.append("BODY=8BITMIME")
        return options, encoding

    def _extensions(self) -> _Extensions:
        """Return what the server's last EHLO offered, read once per EHLO reply."""
        offered = self._smtp.esmtp_extensions
        known = self._offered
        if known is None or known.source is not offered:
            known = self._offered = _Extensions.of(self._smtp)
        return known

    async def quit(self) -> None:
        """End the session politely: QUIT, and its reply for QUIT_TIMEOUT at most."""
        try:
            if self._smtp.is_connected:
                await self._smtp.quit(timeout=min(QUIT_TIMEOUT, self._settings.timeout))
        except (aiosmtplib.SMTPException, OSError):
            pass  # no reply in time, or the server left first: closed all the same
        finally:
            self._smtp.close()

    def close(self, *, say_quit: bool = False) -> None:
        """Close the connection now, without waiting for anything.

        Args:
            say_quit: Write QUIT first if the connection is still open, so a
                server that can still hear it ends the session cleanly (RFC 5321
                4.1.1.10); its reply is not awaited. Leave it False when the
                server is reading message content (QUIT would be content).
        """
        transport = self._smtp.transport
        if (
            say_quit
            and isinstance(transport, asyncio.WriteTransport)
            and not transport.is_closing()
        ):
            transport.write(QUIT)
        self._smtp.close()


@dataclass(frozen=True, slots=True)
class _Extensions:
    """The EHLO extensions MAIL FROM's parameters depend on, from one EHLO reply."""

    source: dict[str, str]  # aiosmtplib's dict for that reply (a new EHLO, a new one)
    size: bool
    size_limit: int | None
    smtputf8: bool
    eightbitmime: bool

    @classmethod
    def of(cls, smtp: aiosmtplib.SMTP) -> _Extensions:
        return cls(
            source=smtp.esmtp_extensions,
            size=smtp.supports_extension("size"),
            size_limit=server_size_limit(smtp),
            smtputf8=smtp.supports_extension("smtputf8"),
            eightbitmime=smtp.supports_extension("8bitmime"),
        )


def every_recipient_refused(
    server: str, refused: dict[str, Reply]
) -> RecipientsRefusedError:
    """Return the error for a transaction in which the server refused everyone.

    It is transient when every recipient was only deferred (a retry may
    succeed), permanent as soon as one was rejected for good.
    """
    first = next(iter(refused.values()))
    return RecipientsRefusedError(
        f"{server} refused every recipient: {first}",
        refused=refused,
        reply=first,
        transient=all(
            classify_reply(reply) is RecipientStatus.DEFERRED
            for reply in refused.values()
        ),
    )
