"""Log in to an SMTP server without ever exposing the password.

The password goes to the server only over TLS, or to a loopback host; it is
never put in an error message, even when a server echoes it back in a reply.
"""

from __future__ import annotations

import aiosmtplib

from mailer.config.secrets import Redactor
from mailer.config.settings import MailerSettings, is_loopback
from mailer.exceptions import AuthenticationError, TLSError
from mailer.transports.smtp.tls import is_encrypted

# AUTH replies that refuse the mechanism, not the credentials.
MECHANISM_REFUSED = frozenset({504, 534})


async def log_in(
    smtp: aiosmtplib.SMTP, settings: MailerSettings, *, server: str
) -> None:
    """Log in with the configured credentials, if any.

    Args:
        smtp: A connected client, after EHLO.
        settings: Where the username and password come from.
        server: ``host:port``, for the messages.

    Raises:
        TLSError: The connection is not encrypted and the host is not loopback,
            so the password would cross the network in clear.
        AuthenticationError: The server offers no AUTH.
        aiosmtplib.SMTPException: The login failed (mapped by the caller); its
            message never contains the password.
    """
    username = settings.smtp_username
    password = settings.smtp_password
    if username is None or password is None:
        return
    if not is_encrypted(smtp) and not is_loopback(settings.smtp_host):
        raise TLSError(
            f"{server} did not offer STARTTLS, and the password is never sent "
            "in clear to a remote host; nothing was sent. Set MAILER_SMTP_TLS=tls "
            "if the server expects TLS from the first byte (usually port 465), "
            "or leave MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD empty if it "
            "needs no login"
        )
    if not smtp.supports_extension("auth"):
        raise AuthenticationError(_no_auth_message(smtp, server))
    secret = password.get_secret_value()
    try:
        await _log_in_once(smtp, username, secret)
    except aiosmtplib.SMTPResponseException as exc:
        # The client redacts every reply it gets back; this covers code that
        # calls the transport directly (see mailer.config.secrets).
        Redactor([(username, secret)]).error(exc)
        raise


def _no_auth_message(smtp: aiosmtplib.SMTP, server: str) -> str:
    """Return why the login cannot happen, and which settings to change."""
    empty = "leave MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD empty"
    if is_encrypted(smtp):
        return (
            f"{server} offers no AUTH, so it cannot take the login; {empty} if "
            "this server needs no login"
        )
    # Servers offer AUTH only over TLS, and local test servers (mailer inbox)
    # take mail without any login.
    return (
        f"{server} offers no AUTH before TLS, so it cannot take the login; "
        f"{empty} for a server that needs no login (such as `mailer inbox`), or "
        "set MAILER_SMTP_TLS=starttls (or tls) if it has TLS"
    )


async def _log_in_once(smtp: aiosmtplib.SMTP, username: str, password: str) -> None:
    """Log in with the first mechanism offered; another only if that one is refused.

    aiosmtplib's ``login`` tries every mechanism after any failure, so a wrong
    password is sent twice (PLAIN, then LOGIN) and counts twice towards an
    account lockout. Here the next mechanism is tried only when the server
    refuses the mechanism itself (504 not implemented, 534 too weak).
    """
    methods = smtp.supported_auth_methods
    for index, name in enumerate(methods):
        try:
            await getattr(smtp, f"auth_{name.replace('-', '')}")(username, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            if exc.code not in MECHANISM_REFUSED or index == len(methods) - 1:
                raise
        else:
            return
    raise aiosmtplib.SMTPException("No suitable authentication method found.")
