"""Report each message's outcome: one structured log record, and OpenTelemetry when on.

Every final result (``sent``, ``failed``, ``pending``) is one record on the
``mailer.outcome`` logger: INFO when sent, WARNING otherwise. Its text reads
well alone, and its fields are attributes of the record (``extra``), so a
JSON formatter (``mailer send --log-format json``, python-json-logger) or
structlog's ``ExtraAdder`` picks them up as they are:

=================  ==========================================================
``mail_status``    sent, failed or pending
``message_id``     the Message-ID (angle brackets included), or None
``recipient_count`` envelope recipients the message was for
``relay``          ``host:port`` of the relay of the last attempt, or None
``attempts``       SMTP transactions tried
``reply_code``     the server's last reply code, or None
``enhanced_status`` its RFC 3463 status (``"2.0.0"``), or None
``duration``       seconds from the start of the send to its result
``ambiguous``      an attempt may have delivered it (see the README)
``error``          why it failed or is pending, or None
=================  ==========================================================

No field holds a body, a subject, an address or a credential.

OpenTelemetry (``mailer.delivery.otel``, the ``[otel]`` extra) is loaded only
when ``MAILER_OTEL`` asks for it (``auto``: when the package is installed and
the application has configured a provider); otherwise a client holds ``None``
and pays one comparison per message.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Protocol

from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.state import PreparedMessage
from mailer.exceptions import ConfigError
from mailer.replies import Reply

logger = logging.getLogger("mailer.outcome")

# The attributes each outcome record carries (see the module docstring).
OUTCOME_FIELDS = (
    "mail_status",
    "message_id",
    "recipient_count",
    "relay",
    "attempts",
    "reply_code",
    "enhanced_status",
    "duration",
    "ambiguous",
    "error",
)


def recipient_count(message: Message | PreparedMessage) -> int:
    """Return how many distinct envelope recipients ``message`` has."""
    if isinstance(message, PreparedMessage):
        return message.recipient_count
    return len({a.envelope for a in (*message.to, *message.cc, *message.bcc)})


def log_outcome(
    message: Message | PreparedMessage | None,
    result: SendResult,
    *,
    relay: str | None,
    duration: float,
    recipients: int = 0,
) -> None:
    """Write the one structured record of ``result`` (logger ``mailer.outcome``).

    Args:
        message: The message; None for one a batch's check pass could not
            prepare (it never reached a client): ``recipients`` counts them.
        result: Its final result.
        relay: The relay of its last attempt, if any.
        duration: Seconds from the start of the send to the result.
        recipients: The envelope recipients, when ``message`` is None.
    """
    level = logging.INFO if result.status is SendStatus.SENT else logging.WARNING
    if not logger.isEnabledFor(level):
        return
    reply = result.reply
    fields = {
        "mail_status": result.status.value,
        "message_id": result.message_id,
        "recipient_count": len(result.recipients)
        or (recipients if message is None else recipient_count(message)),
        "relay": relay,
        "attempts": result.attempts,
        "reply_code": reply.code if reply is not None else None,
        "enhanced_status": reply.enhanced_status if reply is not None else None,
        "duration": round(duration, 6),
        "ambiguous": result.ambiguous,
        "error": result.error,
    }
    logger.log(
        level,
        "%s %s%s after %d attempt(s) in %.3fs%s%s",
        result.status.value,
        result.message_id or "(no Message-ID)",
        f" via {relay}" if relay else "",
        result.attempts,
        duration,
        f": {reply}" if reply is not None else "",
        f" ({result.error})" if result.error and reply is None else "",
        extra=fields,
    )


class MessageTrace(Protocol):
    """What a Telemetry records about one message while it is sent."""

    def attempt_ended(
        self,
        *,
        started_ns: int,
        relay: str | None,
        size: int,
        reply: Reply | None,
        error: BaseException | None,
        deferred: int,
    ) -> None:
        """Record one transaction: where, how many bytes, what the server said."""
        ...

    def finished(
        self, result: SendResult, *, relay: str | None, duration: float
    ) -> None:
        """Record the message's final result (and end what was started for it)."""
        ...


class Telemetry(Protocol):
    """Something that traces and counts messages (``mailer.delivery.otel``)."""

    def start(self, message: Message, /) -> MessageTrace:
        """Start recording one message (its recipients' count, never its content)."""
        ...


_UNSET = object()
_otel: Any = _UNSET  # the mailer.delivery.otel module, once looked up (or None)


def telemetry_from_settings(settings: MailerSettings) -> Telemetry | None:
    """Return OpenTelemetry when ``MAILER_OTEL`` asks for it and it is installed.

    ``off``: never. ``auto`` (the default): when the ``[otel]`` extra is
    installed and the application has set a tracer or meter provider
    (without one every span would be a no-op that still costs time). ``on``:
    whenever it is installed, also if the provider is set later.

    Raises:
        ConfigError: ``MAILER_OTEL=on`` but the ``[otel]`` extra is missing.
    """
    global _otel  # the import is tried once per process
    if settings.otel == "off":
        return None
    if _otel is _UNSET:
        try:
            _otel = importlib.import_module("mailer.delivery.otel")
        except ImportError:
            _otel = None
    if _otel is None:
        if settings.otel == "on":
            raise ConfigError(
                "MAILER_OTEL: on, but OpenTelemetry is not installed; "
                "pip install 'aiomailer[otel]'",
                key="MAILER_OTEL",
            )
        return None
    if settings.otel == "auto" and not _otel.is_configured():
        return None
    telemetry: Telemetry = _otel.OpenTelemetry(settings)
    return telemetry
