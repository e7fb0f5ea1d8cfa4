"""Trace and count messages with OpenTelemetry (the ``[otel]`` extra).

Loaded only by ``telemetry_from_settings`` (``MAILER_OTEL``), never by
``import mailer``. It uses the OpenTelemetry API only: spans and metrics go
wherever the application's SDK sends them, and nowhere without one.

Spans: ``mailer.send`` for each message (INTERNAL), with one child
``smtp.transaction`` (CLIENT) per attempt, carrying ``server.address``,
``server.port``, ``mailer.smtp.tls`` (the relay's TLS mode), the reply code
and enhanced status, the message's size in bytes and, on failure,
``error.type``. The message span has the Message-ID, the recipient count,
the status, the attempts and whether it is ambiguous; a failure sets its
status to ERROR. No span holds an address, a subject, a body or a secret.

Metrics (meter ``mailer``): the counters ``mailer.messages.sent``,
``mailer.messages.failed``, ``mailer.messages.pending``,
``mailer.messages.ambiguous`` and ``mailer.attempts.deferred`` (an attempt
that left recipients to try again), and the histogram
``mailer.delivery.duration`` (seconds from the send to its final result),
each with the ``mailer.relay`` attribute.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.telemetry import recipient_count
from mailer.replies import Reply

SCOPE = "mailer"


def is_configured() -> bool:
    """Return whether the application has set a tracer or meter provider.

    With neither, the API hands out no-op spans and instruments that still
    cost some microseconds per message: ``MAILER_OTEL=auto`` then stays off.
    """
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return True
    # The API's default meter provider is a private proxy class.
    provider = type(metrics.get_meter_provider()).__name__
    return provider not in {"_ProxyMeterProvider", "NoOpMeterProvider"}


class OpenTelemetry:
    """Spans and metrics for each message, through the OpenTelemetry API.

    Args:
        settings: For the relays' TLS modes.
        tracer_provider: Default: the global one (set by the application).
        meter_provider: Default: the global one.
    """

    def __init__(
        self,
        settings: MailerSettings,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.counters = {
            status: meter.create_counter(
                f"mailer.messages.{status.value}",
                unit="{message}",
                description=f"Messages that ended {status.value}",
            )
            for status in SendStatus
        }
        self.ambiguous = meter.create_counter(
            "mailer.messages.ambiguous",
            unit="{message}",
            description="Messages an attempt may have delivered (sent again)",
        )
        self.deferred = meter.create_counter(
            "mailer.attempts.deferred",
            unit="{attempt}",
            description="Attempts that left recipients to try again",
        )
        self.latency = meter.create_histogram(
            "mailer.delivery.duration",
            unit="s",
            description="Seconds from a send to its final result",
        )
        self.tls_modes = {
            f"{relay.smtp_host}:{relay.port}": relay.tls_mode
            for relay in settings.relays
        }

    def start(self, message: Message, /) -> _MessageTrace:
        """Start the span of one message."""
        span = self._tracer.start_span("mailer.send", kind=SpanKind.INTERNAL)
        span.set_attribute("mailer.recipient_count", recipient_count(message))
        return _MessageTrace(self, span)


class _MessageTrace:
    """The span of one message, and its attempts as child spans."""

    def __init__(self, telemetry: OpenTelemetry, span: trace.Span) -> None:
        self._telemetry = telemetry
        self._span = span
        self._context = trace.set_span_in_context(span)
        self._attempt = 0

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
        """Record one transaction as a child span."""
        self._attempt += 1
        attributes: dict[str, Any] = {
            "mailer.attempt": self._attempt,
            "mailer.message.size": size,
            "mailer.recipients.deferred": deferred,
        }
        if relay is not None:
            host, _, port = relay.rpartition(":")
            attributes["server.address"] = host
            if port.isdigit():
                attributes["server.port"] = int(port)
            attributes["mailer.smtp.tls"] = self._telemetry.tls_modes.get(
                relay, "unknown"
            )
        if reply is not None:
            attributes["mailer.smtp.reply.code"] = reply.code
            if reply.enhanced_status is not None:
                attributes["mailer.smtp.reply.enhanced_status"] = reply.enhanced_status
        if error is not None:
            attributes["error.type"] = type(error).__name__
        span = self._telemetry._tracer.start_span(
            "smtp.transaction",
            context=self._context,
            kind=SpanKind.CLIENT,
            start_time=started_ns,
            attributes=attributes,
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
        if deferred:
            self._telemetry.deferred.add(1, _relay_attributes(relay))

    def finished(
        self, result: SendResult, *, relay: str | None, duration: float
    ) -> None:
        """Set the message span's outcome, end it, and count the message."""
        span = self._span
        attributes: dict[str, Any] = {
            "mailer.status": result.status.value,
            "mailer.attempts": result.attempts,
            "mailer.ambiguous": result.ambiguous,
        }
        if result.message_id is not None:
            attributes["mailer.message_id"] = result.message_id
        if relay is not None:
            attributes["mailer.relay"] = relay
        if result.reply is not None:
            attributes["mailer.reply.code"] = result.reply.code
            if result.reply.enhanced_status is not None:
                attributes["mailer.reply.enhanced_status"] = (
                    result.reply.enhanced_status
                )
        span.set_attributes(attributes)
        if result.status is not SendStatus.SENT:
            # The status line only: an error's text may quote addresses.
            span.set_status(Status(StatusCode.ERROR, result.status.value))
        span.end(end_time=time.time_ns())
        relay_attributes = _relay_attributes(relay)
        self._telemetry.counters[result.status].add(1, relay_attributes)
        if result.ambiguous:
            self._telemetry.ambiguous.add(1, relay_attributes)
        self._telemetry.latency.record(duration, relay_attributes)


def _relay_attributes(relay: str | None) -> dict[str, str]:
    return {"mailer.relay": relay} if relay is not None else {}
