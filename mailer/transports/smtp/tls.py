"""Secure an SMTP connection as the settings say: TLS mode, certificates, pinning.

The policy, in one place:

- ``tls`` wraps the socket in TLS before the greeting; ``starttls`` upgrades
  after EHLO and fails if the server does not offer it; ``opportunistic``
  upgrades when STARTTLS is offered and otherwise goes on in clear (with a
  warning, and never with a password to a remote host); ``none`` never uses TLS.
- Certificates are verified against the system store, or only against
  ``MAILER_SMTP_CA_FILE`` when it is set. ``MAILER_SMTP_INSECURE_SKIP_VERIFY``
  turns verification off and logs a warning on every connection.
- ``MAILER_SMTP_TLS_FINGERPRINT`` pins the server certificate's SHA-256; it is
  checked right after the handshake, before any other command.
- ``MAILER_SMTP_TLS_MIN_VERSION`` (1.2 or 1.3) is the oldest protocol accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

from mailer.config.dsn import TLSMode
from mailer.config.settings import MailerSettings
from mailer.exceptions import DeliveryTimeoutError, TLSError
from mailer.transports.smtp.greeting import greet, greeted_with_helo

logger = logging.getLogger("mailer.tls")

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# OpenSSL verification codes (X509_V_ERR_*) and what they mean to a user.
_VERIFY_EXPLANATIONS = {
    9: "the certificate is not valid yet",
    10: "the certificate has expired",
    18: "the certificate is self-signed",
    19: "the certificate chain ends in a self-signed certificate that is not trusted",
    20: "the certificate's issuer is not a trusted authority",
    21: "the certificate's issuer is not a trusted authority",
    2: "the certificate's issuer is not a trusted authority",
    23: "the certificate has been revoked",
    62: "the certificate is for another host (wrong host)",
    64: "the certificate is for another address (wrong host)",
}
_ISSUER_HINT = (
    "; set MAILER_SMTP_CA_FILE to the authority that issued it, or pin it "
    "with MAILER_SMTP_TLS_FINGERPRINT"
)
_HINTS = {18: _ISSUER_HINT, 19: _ISSUER_HINT, 20: _ISSUER_HINT, 21: _ISSUER_HINT}
# Handshake failures that usually mean the two sides share no TLS version.
_VERSION_REASONS = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
        "WRONG_SSL_VERSION",
    }
)

_contexts: dict[tuple[bool, Path | None, str], ssl.SSLContext] = {}


def explain_certificate_failure(error: ssl.SSLCertVerificationError) -> str:
    """Return which certificate check failed, in words, with OpenSSL's own text.

    Args:
        error: The verification error from the handshake.
    """
    detail = error.verify_message or error.reason or "verification failed"
    code = error.verify_code
    explanation = _VERIFY_EXPLANATIONS.get(code)
    if explanation is None:
        return detail
    return f"{explanation} ({detail}){_HINTS.get(code, '')}"


def explain_handshake_failure(reason: str) -> str:
    """Return a hint for a handshake failure that is not about the certificate."""
    if reason in _VERSION_REASONS:
        return " (no TLS version both sides accept; see MAILER_SMTP_TLS_MIN_VERSION)"
    return ""


def build_client_context(
    *, verify: bool, ca_file: Path | None, min_version: str
) -> ssl.SSLContext:
    """Return a new client SSLContext for the given checks.

    Args:
        verify: Check the certificate chain and the host name.
        ca_file: Trust only the authorities in this PEM file (default: the
            system store).
        min_version: ``"1.2"`` or ``"1.3"``.
    """
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None
    )
    context.minimum_version = TLS_VERSIONS[min_version]
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def certificate_fingerprint(certificate: bytes) -> str:
    """Return the SHA-256 fingerprint of a DER certificate, as ``AB:CD:...``."""
    digest = hashlib.sha256(certificate).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def is_encrypted(smtp: aiosmtplib.SMTP) -> bool:
    """Return whether the connection runs over TLS now."""
    return smtp.is_connected and smtp.get_transport_info("ssl_object") is not None


def no_starttls_message(smtp: aiosmtplib.SMTP, server: str) -> str:
    """Return why a required STARTTLS cannot happen, and which setting to change."""
    if greeted_with_helo(smtp):
        why = f"{server} refused EHLO and answered HELO, so it offers no STARTTLS"
    else:
        why = f"{server} does not offer STARTTLS (its EHLO reply lists no STARTTLS)"
    return (
        f"{why}, which MAILER_SMTP_TLS=starttls requires; nothing was sent. Set "
        "MAILER_SMTP_TLS=none for a server without TLS (such as `mailer inbox`), "
        "or MAILER_SMTP_TLS=tls if it expects TLS from the first byte (usually "
        "port 465)"
    )


@dataclass(frozen=True, slots=True)
class TLSPolicy:
    """How one server's connections are secured, read from the settings.

    Attributes:
        mode: none, opportunistic, starttls or tls.
        verify: Whether certificates are verified.
        ca_file: The only authorities trusted, if set.
        min_version: The oldest TLS version accepted.
        fingerprints: Pinned SHA-256 fingerprints (lower-case hex), if any.
    """

    mode: TLSMode
    verify: bool = True
    ca_file: Path | None = None
    min_version: str = "1.2"
    fingerprints: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: MailerSettings) -> TLSPolicy:
        """Return the policy the settings ask for."""
        return cls(
            mode=settings.tls_mode,
            verify=not settings.smtp_insecure_skip_verify,
            ca_file=settings.smtp_ca_file,
            min_version=settings.smtp_tls_min_version,
            fingerprints=settings.tls_fingerprints,
        )

    async def client_context(self) -> ssl.SSLContext | None:
        """Return the SSLContext to use (shared, built once), or None without TLS."""
        if self.mode == "none":
            return None
        key = (self.verify, self.ca_file, self.min_version)
        context = _contexts.get(key)
        if context is None:
            # Loading the system trust store reads files: keep it off the loop.
            context = await asyncio.to_thread(
                build_client_context,
                verify=self.verify,
                ca_file=self.ca_file,
                min_version=self.min_version,
            )
            _contexts[key] = context
        return context

    async def connect(
        self,
        smtp: aiosmtplib.SMTP,
        *,
        server: str,
        sock: socket.socket,
        greeting_timeout: float,
    ) -> None:
        """Connect ``smtp`` over ``sock``, greet, and secure the session.

        For ``starttls`` and ``opportunistic`` the client greets (EHLO, or HELO
        if the server refuses EHLO) and upgrades here; afterwards the caller
        greets again (RFC 3207 4.2). No other command is sent.

        Args:
            smtp: A client built with ``use_tls`` for ``tls`` and with
                ``start_tls=False`` (the upgrade is this policy's decision).
            server: ``host:port``, for the messages.
            sock: A connected socket (aiosmtplib then owns it). aiosmtplib
                needs no port with it; the host name stays, for the
                certificate check.
            greeting_timeout: Seconds for the implicit-TLS handshake and the
                greeting (``MAILER_GREETING_TIMEOUT``).

        Raises:
            DeliveryTimeoutError: No greeting (or handshake) in time.
            TLSError: STARTTLS is required and not offered, the certificate
                does not match the pin, or the handshake was cut off (other TLS
                failures are mapped by the caller).
        """
        context = await self.client_context()
        try:
            await smtp.connect(
                tls_context=context, sock=sock, port=None, timeout=greeting_timeout
            )
        except aiosmtplib.SMTPConnectTimeoutError as exc:
            raise DeliveryTimeoutError(
                self._no_greeting(server, greeting_timeout), transient=True
            ) from exc
        try:
            if self.mode in ("starttls", "opportunistic"):
                await self._upgrade(smtp, context, server=server)
        except aiosmtplib.SMTPServerDisconnected as exc:
            if "upgrading transport" not in exc.message:
                raise
            hint = explain_handshake_failure("UNSUPPORTED_PROTOCOL")
            raise TLSError(
                f"TLS with {server} failed: the server ended the handshake{hint}"
            ) from exc
        if is_encrypted(smtp):
            if not self.verify:
                logger.warning(
                    "TLS certificate of %s NOT verified "
                    "(MAILER_SMTP_INSECURE_SKIP_VERIFY=true)%s: anyone on the "
                    "path could read and change this mail",
                    server,
                    "; its fingerprint is pinned" if self.fingerprints else "",
                )
            self._check_pin(smtp, server=server)

    def _no_greeting(self, server: str, timeout: float) -> str:
        if self.mode == "tls":
            return (
                f"{server} accepted the connection but completed no TLS handshake "
                f"and greeting within {timeout:g} s (MAILER_GREETING_TIMEOUT)"
            )
        # A port that expects TLS from the first byte waits for our handshake
        # while we wait for its greeting: the usual cause, so say it.
        return (
            f"{server} accepted the connection but sent no greeting within "
            f"{timeout:g} s (MAILER_GREETING_TIMEOUT); if this port expects TLS "
            "from the first byte (usually 465), set MAILER_SMTP_TLS=tls"
        )

    async def _upgrade(
        self, smtp: aiosmtplib.SMTP, context: ssl.SSLContext | None, *, server: str
    ) -> None:
        await greet(smtp, server=server)
        if smtp.supports_extension("starttls"):
            await smtp.starttls(tls_context=context)
            return
        if self.mode == "starttls":
            raise TLSError(no_starttls_message(smtp, server))
        logger.warning(
            "%s does not offer STARTTLS: sending in clear "
            "(MAILER_SMTP_TLS=opportunistic)",
            server,
        )

    def _check_pin(self, smtp: aiosmtplib.SMTP, *, server: str) -> None:
        if not self.fingerprints:
            return
        ssl_object = smtp.get_transport_info("ssl_object")
        certificate = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not certificate:
            raise TLSError(f"TLS with {server} failed: the server sent no certificate")
        seen = certificate_fingerprint(certificate)
        if seen.replace(":", "").lower() not in self.fingerprints:
            raise TLSError(
                f"TLS with {server} failed: certificate fingerprint SHA256 {seen} "
                "does not match MAILER_SMTP_TLS_FINGERPRINT; nothing was sent"
            )
