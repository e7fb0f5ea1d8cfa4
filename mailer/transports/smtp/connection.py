"""Open one SMTP session (TLS policy, login) and run mail transactions on it."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import aiosmtplib

from mailer.config.settings import MailerSettings
from mailer.content.message import Envelope
from mailer.exceptions import RecipientsRefusedError, UnsupportedError
from mailer.replies import RecipientStatus, Reply, classify_reply
from mailer.transports.base import Delivery
from mailer.transports.smtp.limits import check_server_size
from mailer.transports.smtp.login import log_in
from mailer.transports.smtp.sockets import open_socket
from mailer.transports.smtp.tls import TLSPolicy


class Phase(enum.Enum):
    """Where a transaction stands: decides whether a failure may have delivered."""

    IDLE = "idle"
    ENVELOPE = "envelope"  # MAIL/RCPT: nothing can have been delivered yet
    DATA = "data"  # content sent or being sent: the server may have accepted it


class SMTPConnection:
    """One SMTP session, reused for many messages one after the other."""

    def __init__(self, settings: MailerSettings) -> None:
        self.server = f"{settings.smtp_host}:{settings.port}"
        mode = settings.tls_mode
        self._settings = settings
        # start_tls is never None: aiosmtplib's None means "upgrade if offered",
        # which silently continues in clear (AUTH included) when a server, or an
        # attacker in the middle, hides STARTTLS.
        self._smtp = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.port,
            use_tls=mode == "tls",
            start_tls=mode == "starttls",
            validate_certs=True,
            cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
            timeout=settings.timeout,
            local_hostname=settings.smtp_local_hostname,
        )
        self.phase = Phase.IDLE
        self.opened_at = 0.0

    @property
    def smtp(self) -> aiosmtplib.SMTP:
        """Return the aiosmtplib client (the pipelined path writes through it)."""
        return self._smtp

    @property
    def supports_pipelining(self) -> bool:
        """Return whether the server offered PIPELINING (RFC 2920) in EHLO."""
        return self._smtp.supports_extension("pipelining")

    @property
    def is_usable(self) -> bool:
        """Return whether the session is still open and between transactions."""
        return self._smtp.is_connected and self.phase is Phase.IDLE

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
            await self._smtp.ehlo()
        self.opened_at = time.monotonic()
        await log_in(self._smtp, self._settings, server=self.server)

    async def send(
        self,
        envelope: Envelope,
        content: bytes,
        *,
        before_content: Callable[[], None] | None = None,
    ) -> Delivery:
        """Run one mail transaction: MAIL, RCPT for each recipient, DATA.

        Args:
            envelope: MAIL FROM and RCPT TO addresses.
            content: The serialised message.
            before_content: Called before DATA; if it raises, DATA is not sent
                (the caller drops the connection, mid-transaction).

        Returns:
            The accepted and refused recipients and the reply to DATA.

        Raises:
            RecipientsRefusedError: Every recipient was refused.
            UnsupportedError: The message needs SMTPUTF8 and the server lacks it.
            aiosmtplib.SMTPException: Any other failure (mapped by the caller).
        """
        smtp = self._smtp
        options, encoding = self.mail_options(envelope, content)
        self.phase = Phase.ENVELOPE
        await smtp.mail(envelope.mail_from, options=options, encoding=encoding)
        accepted: list[str] = []
        refused: dict[str, Reply] = {}
        for recipient in envelope.rcpt_tos:
            try:
                await smtp.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if exc.code == 421 or not smtp.is_connected:
                    # 421 ends the session (aiosmtplib has closed it): the whole
                    # transaction failed, not this recipient. Never go on to DATA.
                    raise
                refused[recipient] = Reply(exc.code, exc.message)
            else:
                accepted.append(recipient)
        if not accepted:
            await smtp.rset()
            self.phase = Phase.IDLE
            raise every_recipient_refused(self.server, refused)
        if before_content is not None:
            before_content()
        self.phase = Phase.DATA
        # The final reply may take long (content scanning), and a timeout there
        # is the one that can deliver twice (RFC 5321 4.5.3.2.6): give DATA the
        # whole-message budget, not the per-command timeout.
        reply = await smtp.data(content, timeout=self._settings.message_timeout)
        self.phase = Phase.IDLE
        return Delivery(tuple(accepted), refused, Reply(reply.code, reply.message))

    def mail_options(self, envelope: Envelope, content: bytes) -> tuple[list[str], str]:
        """Check that the message may go out, then return MAIL FROM's parameters.

        Both the one-command-at-a-time and the pipelined paths call this before
        anything is written.

        Returns:
            The MAIL FROM parameters and the encoding of the envelope addresses.

        Raises:
            HeaderInjectionError: An address could break the command line.
            UnsupportedError: The message needs SMTPUTF8 and the server lacks
                it, or it is larger than the server's SIZE.
        """
        smtp = self._smtp
        envelope.check_sendable()
        check_server_size(smtp, content, server=self.server)
        options: list[str] = []
        encoding = "ascii"
        if envelope.smtputf8:
            if not smtp.supports_extension("smtputf8"):
                raise UnsupportedError(
                    f"{self.server} does not support SMTPUTF8, which a non-ASCII "
                    "address needs"
                )
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(content)}")
        if not content.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        return options, encoding

    async def quit(self) -> None:
        """End the session politely (QUIT); close it if the server does not answer."""
        if not self._smtp.is_connected:
            return
        try:
            await self._smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            self._smtp.close()

    def close(self) -> None:
        """Drop the connection at once, without QUIT (after an error)."""
        self._smtp.close()


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
