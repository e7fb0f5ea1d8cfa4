"""Build the transport the settings describe: one SMTP relay, or several."""

from __future__ import annotations

from mailer.config.settings import MailerSettings
from mailer.transports.base import Transport
from mailer.transports.console import ConsoleTransport
from mailer.transports.failover import FailoverMode, FailoverTransport
from mailer.transports.ratelimit import LimiterFactory
from mailer.transports.smtp.transport import SMTPTransport


def transport_from_settings(
    settings: MailerSettings, *, limiters: LimiterFactory | None = None
) -> Transport:
    """Return an SMTPTransport, or a FailoverTransport when MAILER_DSN lists relays.

    ``MAILER_DSN=console://`` gives a ConsoleTransport: every message is printed
    to standard output and none is sent (for development).

    Args:
        settings: The settings (every relay of ``MAILER_DSN``).
        limiters: Makes each relay's rate limiter from its settings; default
            a ``LocalRateLimiter`` per relay, kept in this process.
    """
    if settings.relay_mode == "console":
        return ConsoleTransport()

    def smtp(relay: MailerSettings) -> SMTPTransport:
        return SMTPTransport(
            relay, limiter=None if limiters is None else limiters(relay)
        )

    relays = settings.relays
    if len(relays) == 1:
        return smtp(relays[0])
    mode: FailoverMode = (
        "roundrobin" if settings.relay_mode == "roundrobin" else "failover"
    )
    return FailoverTransport(
        [(f"{relay.smtp_host}:{relay.port}", smtp(relay)) for relay in relays],
        mode=mode,
        cooldown=settings.relay_cooldown,
    )
