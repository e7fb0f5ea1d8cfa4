"""Say what a server's reply means: Reply, recipient status, the verdict on failure.

This module owns reply classification (RFC 5321 4.2.1, and Postfix's practice):
a 4xx reply means "try again later", a 5xx reply means "do not repeat this
request", and anything else that fails (a malformed line, which aiosmtplib
reports as code -1, a lost connection, a timeout) may succeed on a new
connection. The transports, the retry loop, the journal and the reports all
ask it rather than compare codes themselves.
"""

from __future__ import annotations

import enum
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mailer.exceptions import (
    AuthenticationError,
    ConnectError,
    DeliveryError,
    DeliveryTimeoutError,
    RelaysUnavailableError,
    TLSError,
)

CODE_OK = 250
CODE_CLOSING = 421
CODE_AUTH_REQUIRED = 530
# RFC 3463 enhanced status code at the start of a reply text: "2.0.0 Ok".
_ENHANCED_STATUS = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: its code and text (multi-line replies joined by newlines)."""

    code: int
    text: str

    @property
    def enhanced_status(self) -> str | None:
        """Return the RFC 3463 enhanced status code ("5.1.1"), if the reply has one."""
        match = _ENHANCED_STATUS.match(self.text)
        return match.group(1) if match else None

    def to_dict(self) -> dict[str, Any]:
        """Return the reply as the report shows it.

        ``{"code": 550, "enhanced_status": "5.1.1", "text": "5.1.1 no such user"}``;
        ``enhanced_status`` is left out when the reply has none.
        """
        line: dict[str, Any] = {"code": self.code}
        if self.enhanced_status is not None:
            line["enhanced_status"] = self.enhanced_status
        line["text"] = self.text
        return line

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class RecipientStatus(enum.StrEnum):
    """Where one recipient of a message stands (see ``mailer.retry``)."""

    ACCEPTED = "accepted"  # the server took responsibility (250 to RCPT, then DATA)
    DEFERRED = "deferred"  # refused for now (4xx, lost connection, timeout)
    REJECTED = "rejected"  # refused for good (5xx): never retried


class Verdict(enum.Enum):
    """What a failed attempt means for the message and for the batch."""

    TRANSIENT = "transient"  # try the deferred recipients again later
    PERMANENT = "permanent"  # this message is refused; do not repeat it
    FATAL = "fatal"  # the configuration is wrong: every message would fail


def is_transient_reply(reply: Reply) -> bool:
    """Return whether a failing reply may succeed later: anything but a 5xx.

    A 4xx says so (and so does an enhanced 4.x.x status). Any other failing
    reply is unexpected (a malformed line, which aiosmtplib reports as code
    -1, or a 250 where 354 was due): the connection is out of step and
    dropped, and the request may be repeated on a new one, within the attempt
    budget. Only a 5xx means "do not repeat this request".
    """
    return not 500 <= reply.code < 600


def is_refusal(reply: Reply) -> bool:
    """Return whether a reply refuses its command and leaves the session in step.

    A 4xx or 5xx reply answers the command it was meant for: the server is in a
    known state, and the session can go on (after RSET, if a transaction was
    open). A 421 is the exception: the server is closing the session (RFC 5321
    3.8). Any other unexpected reply (a malformed line, code -1, or a code of
    the wrong class, such as 354 to MAIL) means the session is out of step.
    """
    return 400 <= reply.code < 600 and reply.code != CODE_CLOSING


def settles_content(reply: Reply) -> bool:
    """Return whether a reply to a message's content says for sure what happened.

    250 accepts the message; a 4xx or 5xx refuses it (421 included). Anything
    else, a malformed line (code -1) or an out-of-step code (354, 251...),
    leaves it unknown: the server may have stored the message, so a failure
    with such a reply is ambiguous (RFC 1047).
    """
    return reply.code == CODE_OK or 400 <= reply.code < 600


def calls_for_helo(reply: Reply) -> bool:
    """Return whether a refused EHLO should be followed by HELO.

    A server without the service extensions answers EHLO with 500 or 502 (or
    501, 504, 550); a client then greets with HELO (RFC 5321 3.2 and 4.1.4), as
    smtplib and aiosmtplib do. A 4xx is not that: the server asks to try later.
    """
    return 500 <= reply.code < 600


def requires_starttls(reply: Reply) -> bool:
    """Return whether a refusal asks for STARTTLS first (RFC 3207 4: 530)."""
    return reply.code == CODE_AUTH_REQUIRED and "starttls" in reply.text.lower()


def requires_login(reply: Reply) -> bool:
    """Return whether a refusal asks the client to log in (RFC 4954 6: 530)."""
    return reply.code == CODE_AUTH_REQUIRED and not requires_starttls(reply)


def is_too_many_recipients(reply: Reply) -> bool:
    """Return whether a 552 refusal of RCPT means "too many recipients".

    RFC 821 listed 552 for that limit; RFC 5321 (4.5.3.1.10) corrects it to 452
    and asks clients to treat such a 552 as temporary: the recipient is fine,
    the transaction is full. Servers that still answer so say it with the
    enhanced status 5.5.3, or in words when they send no enhanced status. Any
    other 552 (a full mailbox, 5.2.2) stays final.
    """
    if reply.code != 552:
        return False
    if reply.enhanced_status is not None:
        return reply.enhanced_status == "5.5.3"
    return "too many recipients" in reply.text.lower()


# Words servers use when they refuse because the client sends too fast:
# "4.7.0 rate limit exceeded", "Throttling failure: Maximum sending rate
# exceeded" (SES), "4.7.28 ... unusual rate", "too many messages", "slow down".
_RATE_WORDS = re.compile(
    r"\brate\b|throttl|too many (?:messages|mails?|emails?|connections|requests)"
    r"|slow down|sending limit|limit exceeded|quota",
    re.IGNORECASE,
)


def is_rate_refusal(reply: Reply) -> bool:
    """Return whether ``reply`` says the client is sending too fast.

    A 421 with an enhanced status 4.7.x (a policy refusal: providers close
    the session that way when a client goes over their rate) counts. Any
    other 421, 451, 454 or 4.7.x reply counts when its text speaks of a rate,
    throttling, or too many messages: a greylisting 451 ("4.7.1 greylisted,
    try again later") or a server going down ("421 4.3.2 Service shutting
    down") is not a reason to slow the relay down for minutes.
    """
    if not 400 <= reply.code < 500:
        return False
    status = reply.enhanced_status
    if reply.code == 421 and status is not None and status.startswith("4.7."):
        return True
    policy = reply.code in (421, 451, 454) or (
        status is not None and status.startswith("4.7.")
    )
    return policy and _RATE_WORDS.search(reply.text) is not None


def classify_reply(reply: Reply) -> RecipientStatus:
    """Return the status a recipient gets from the server's refusal of it.

    ``reply`` answered the recipient's RCPT: a 4xx defers it, and so does a
    552 "too many recipients" (tried again in a transaction of its own); any
    other 5xx rejects it for good.
    """
    if is_transient_reply(reply) or is_too_many_recipients(reply):
        return RecipientStatus.DEFERRED
    return RecipientStatus.REJECTED


def classify_error(error: BaseException) -> Verdict:
    """Return what a failed attempt means.

    A refused login or a TLS failure is FATAL: it is a configuration error that
    every other message would hit too, and repeating logins risks locking the
    account. A DeliveryError marked transient (4xx, lost connection, timeout),
    or carrying an unexpected reply, is TRANSIENT. Anything else, including a
    bug, is PERMANENT: retrying would not help.
    """
    if isinstance(error, AuthenticationError | TLSError):
        return Verdict.FATAL
    if isinstance(error, DeliveryError) and (
        error.transient or (error.reply is not None and is_transient_reply(error.reply))
    ):
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


class Misconfiguration(enum.Enum):
    """Why every message of a batch would fail the same way: what to check."""

    UNREACHABLE = "unreachable"  # refused, or the host name does not resolve
    NOT_SMTP = "not smtp"  # no greeting or not an SMTP one: wrong port or TLS mode
    CLIENT_REFUSED = "client refused"  # a 5xx greeting: this client is not served
    STARTTLS_REQUIRED = "starttls required"  # 530 ... STARTTLS
    LOGIN_REQUIRED = "login required"  # any other 530 (RFC 4954: authentication)
    LOGIN_REFUSED = "login refused"  # the credentials were refused
    NO_LOGIN = "no login"  # credentials set, but the server offers no AUTH
    NO_STARTTLS = "no starttls"  # STARTTLS required, and the server does not offer it
    TLS = "tls"  # the TLS handshake or the certificate failed

    def __str__(self) -> str:
        return self.value


def _chain(error: BaseException) -> Iterator[BaseException]:
    """Yield ``error`` and the errors it was raised from, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def misconfiguration(error: BaseException) -> Misconfiguration | None:
    """Return what is misconfigured if ``error`` is one every message would hit.

    These failures are about the session, not the message: the server cannot
    be reached (connection refused, a host name that does not resolve), what
    answers is not an SMTP server speaking in clear (no greeting in time, or a
    greeting that is not SMTP: a wrong port, or implicit TLS on one side only),
    the server refuses this client at the greeting (5xx), asks for STARTTLS or
    a login first (530, RFC 3207 and 4954), refuses the login, or TLS fails.
    A failover list is misconfigured when every relay is.

    Only the first attempt of a batch is judged by this (see
    ``mailer.delivery.control``): once a message went through, a refused
    connection means a server restarting, which is worth a retry.
    """
    # First: the transport raises a 530 as TLSError or AuthenticationError
    # (with the reply), and the reply says which of the two is missing.
    reply = error.reply if isinstance(error, DeliveryError) else None
    if reply is not None and requires_starttls(reply):
        return Misconfiguration.STARTTLS_REQUIRED
    if reply is not None and requires_login(reply):
        return Misconfiguration.LOGIN_REQUIRED
    if isinstance(error, AuthenticationError):
        if error.reply is None:  # no AUTH offered: nothing was refused
            return Misconfiguration.NO_LOGIN
        return Misconfiguration.LOGIN_REFUSED
    if isinstance(error, TLSError):
        if any(isinstance(e, ssl.SSLError) for e in _chain(error)):
            return Misconfiguration.TLS
        return Misconfiguration.NO_STARTTLS
    if isinstance(error, RelaysUnavailableError):
        kinds = {misconfiguration(each) for each in error.errors.values()}
        return kinds.pop() if len(kinds) == 1 else None
    if not isinstance(error, DeliveryError):
        return None
    chain = list(_chain(error))
    if isinstance(error, ConnectError):
        if any(isinstance(e, ConnectionRefusedError | socket.gaierror) for e in chain):
            return Misconfiguration.UNREACHABLE
        if reply is not None and 500 <= reply.code < 600:
            return Misconfiguration.CLIENT_REFUSED
        if reply is not None and reply.code < 0:  # a greeting that is not SMTP
            return Misconfiguration.NOT_SMTP
    if isinstance(error, DeliveryTimeoutError) and any(
        # aiosmtplib's connect timeout, the greeting's: both a timeout and a
        # connection error (the TCP connect has a timeout of its own).
        isinstance(e, TimeoutError) and isinstance(e, ConnectionError)
        for e in chain
    ):
        return Misconfiguration.NOT_SMTP
    return None
