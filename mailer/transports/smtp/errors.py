"""Translate aiosmtplib, TLS and socket errors into DeliveryErrors, in one place."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import aiosmtplib

from mailer.exceptions import (
    AuthenticationError,
    ConnectError,
    DataRefusedError,
    DeliveryError,
    DeliveryTimeoutError,
    RejectedError,
    SenderRefusedError,
    TLSError,
    UnsupportedError,
)
from mailer.replies import Reply, requires_login, requires_starttls
from mailer.transports.smtp.tls import (
    explain_certificate_failure,
    explain_handshake_failure,
)


def _reply(exc: aiosmtplib.SMTPResponseException) -> Reply:
    return Reply(exc.code, exc.message)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_tls_failure(error: ssl.SSLError, server: str) -> str:
    """Return a one-line reason for a TLS failure that says which check failed."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = explain_certificate_failure(error)
        return f"TLS with {server} failed: certificate not trusted: {reason}"
    reason = error.reason or str(error)
    hint = explain_handshake_failure(reason)
    if reason in {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"}:
        hint = (
            " (is MAILER_SMTP_TLS right for this port?"
            " tls is usually 465, starttls 587)"
        )
    return f"TLS with {server} failed: {reason}{hint}"


def _response_error(
    exc: aiosmtplib.SMTPResponseException, server: str
) -> DeliveryError:
    """Return the DeliveryError for a server's reply, most specific class first."""
    reply = _reply(exc)
    transient = 400 <= exc.code < 500
    if requires_starttls(reply):
        # RFC 3207 4: every message would get this; say which setting to change.
        return TLSError(
            f"{server} requires STARTTLS first ({reply}): set "
            "MAILER_SMTP_TLS=starttls; nothing was sent",
            reply=reply,
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return AuthenticationError(
            f"{server} refused the login: {exc.code} {exc.message}", reply=reply
        )
    if requires_login(reply):
        return AuthenticationError(
            f"{server} requires a login ({reply}): set MAILER_SMTP_USERNAME and "
            "MAILER_SMTP_PASSWORD; nothing was sent",
            reply=reply,
        )
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return SenderRefusedError(
            f"{server} refused the sender {exc.sender}: {exc.code} {exc.message}",
            reply=reply,
            transient=transient,
        )
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return DataRefusedError(
            f"{server} refused the message: {exc.code} {exc.message}",
            reply=reply,
            transient=transient,
        )
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return ConnectError(
            f"{server} refused the connection: {exc.code} {exc.message}",
            reply=reply,
            transient=not 500 <= exc.code < 600,
        )
    return RejectedError(
        f"{server} answered {exc.code} {exc.message}",
        reply=reply,
        transient=transient,
    )


@contextmanager
def map_smtp_errors(server: str) -> Iterator[None]:
    """Re-raise aiosmtplib, ssl and socket errors as the matching DeliveryError.

    Args:
        server: ``host:port``, for the messages.
    """
    try:
        yield
    except DeliveryError:
        raise
    except aiosmtplib.SMTPResponseException as exc:
        raise _response_error(exc, server) from exc
    except aiosmtplib.SMTPConnectTimeoutError as exc:
        raise DeliveryTimeoutError(
            f"timed out connecting to {server}", transient=True
        ) from exc
    except aiosmtplib.SMTPTimeoutError as exc:
        raise DeliveryTimeoutError(
            f"{server} did not answer in time", transient=True
        ) from exc
    except aiosmtplib.SMTPNotSupported as exc:
        raise UnsupportedError(f"{server}: {exc.message}") from exc
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
        tls_error = _ssl_cause(exc)
        if tls_error is not None:
            raise TLSError(describe_tls_failure(tls_error, server)) from exc
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            raise ConnectError(
                f"{server} closed the connection: {exc.message}", transient=True
            ) from exc
        cause = exc.__cause__
        reason = cause.strerror if isinstance(cause, OSError) else None
        raise ConnectError(
            f"cannot reach {server}: {reason or exc.message}", transient=True
        ) from exc
    except ssl.SSLError as exc:
        raise TLSError(describe_tls_failure(exc, server)) from exc
    except aiosmtplib.SMTPException as exc:
        raise DeliveryError(f"{server}: {exc.message}") from exc
    except TimeoutError as exc:
        raise DeliveryTimeoutError(
            f"{server} did not answer in time", transient=True
        ) from exc
    except OSError as exc:
        raise ConnectError(
            f"cannot reach {server}: {exc.strerror or exc}", transient=True
        ) from exc
