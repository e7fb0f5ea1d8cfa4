"""Telemetry: one structured log record per outcome, and OpenTelemetry spans and metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mailer import (
    ConfigError,
    Delivery,
    MailerSettings,
    Message,
    MessageClient,
    RecipientsRefusedError,
    Reply,
    SendStatus,
)
from mailer.delivery import telemetry as telemetry_module
from mailer.delivery.otel import OpenTelemetry
from mailer.delivery.telemetry import OUTCOME_FIELDS, telemetry_from_settings
from mailer.exceptions import ConnectError
from mailer.testing import SentMail
from mailer.transports import MemoryTransport, MockTransport

BODY = "Your code is 493817\n"
SUBJECT = "Secret subject line"


def message(n: int = 1, **fields: object) -> Message:
    values: dict[str, object] = {
        "to": f"user{n}@example.test",
        "cc": "copy@example.test",
        "subject": SUBJECT,
        "body": BODY,
    }
    values.update(fields)
    return Message(**values)  # type: ignore[arg-type]


def relay_transport(outcomes: list[str] | dict[str, list[str]]) -> MockTransport:
    """A relay named smtp.example.test:587 answering from a script (per first recipient)."""

    def handler(mail: SentMail) -> Delivery:
        script = (
            outcomes
            if isinstance(outcomes, list)
            else outcomes[mail.envelope.rcpt_tos[0]]
        )
        outcome = script.pop(0)
        if outcome == "421":
            error = ConnectError(
                "smtp.example.test:587 answered 421",
                reply=Reply(421, "4.7.0 rate limit exceeded"),
                transient=True,
            )
            error.relay = "smtp.example.test:587"
            raise error
        if outcome == "550":
            error550 = RecipientsRefusedError(
                "refused",
                refused={
                    r: Reply(550, "5.1.1 no such user") for r in mail.envelope.rcpt_tos
                },
                reply=Reply(550, "5.1.1 no such user"),
            )
            error550.relay = "smtp.example.test:587"
            raise error550
        return Delivery(
            mail.envelope.rcpt_tos,
            {},
            Reply(250, "2.0.0 Ok: queued as 7"),
            relay="smtp.example.test:587",
        )

    return MockTransport(handler)


def outcome_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mailer.outcome"]


async def test_one_structured_record_per_outcome(
    settings: MailerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A sent message (after a 421) is one INFO record with every field set from the result."""
    caplog.set_level(logging.INFO, logger="mailer.outcome")
    client = MessageClient(settings, transport=relay_transport(["421", "250"]))
    result = await client.send(message(1))
    [record] = outcome_records(caplog)
    fields = {name: getattr(record, name) for name in OUTCOME_FIELDS}
    assert fields == {
        "mail_status": "sent",
        "message_id": result.message_id,
        "recipient_count": 2,
        "relay": "smtp.example.test:587",
        "attempts": 2,
        "reply_code": 250,
        "enhanced_status": "2.0.0",
        "duration": fields["duration"],
        "ambiguous": False,
        "error": None,
    }
    assert 0 <= fields["duration"] < 5
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith(
        f"sent {result.message_id} via smtp.example.test:587 after 2 attempt(s) in "
    )
    assert record.getMessage().endswith(": 250 2.0.0 Ok: queued as 7")


async def test_failed_and_pending_outcomes_are_warnings(
    settings: MailerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A 550 and a stopped batch's message are WARNING records with their reply or reason."""
    import asyncio

    client = MessageClient(settings, transport=relay_transport(["550"]))
    with pytest.raises(RecipientsRefusedError):
        await client.send(message(1))
    stop = asyncio.Event()
    stop.set()
    await client.send_many([message(2)], stop=stop)
    failed, pending = outcome_records(caplog)
    assert (
        failed.levelno,
        failed.mail_status,
        failed.reply_code,
        failed.enhanced_status,
    ) == (logging.WARNING, "failed", 550, "5.1.1")  # type: ignore[attr-defined]
    assert (pending.levelno, pending.mail_status, pending.attempts) == (
        logging.WARNING,
        "pending",
        0,
    )  # type: ignore[attr-defined]
    assert pending.error == "not sent: interrupted"  # type: ignore[attr-defined]


async def test_outcome_records_hold_no_body_subject_or_address(
    settings: MailerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the text nor any field of an outcome record holds the body, the subject or an address."""
    caplog.set_level(logging.INFO, logger="mailer.outcome")
    client = MessageClient(settings, transport=MemoryTransport())
    await client.send(message(1))
    [record] = outcome_records(caplog)
    dumped = (
        json.dumps(
            {k: v for k, v in vars(record).items() if k in OUTCOME_FIELDS}, default=str
        )
        + record.getMessage()
    )
    for secret in ("493817", SUBJECT, "user1@", "copy@", "shop@"):
        assert secret not in dumped


def test_no_outcome_record_is_built_when_nobody_listens(
    settings: MailerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the logger above WARNING, log_outcome returns before building anything."""
    from mailer.delivery.results import SendResult

    logging.getLogger("mailer.outcome").setLevel(logging.ERROR)
    monkeypatch.setattr(
        telemetry_module.logger, "log", lambda *a, **k: pytest.fail("logged")
    )
    try:
        result = SendResult.of(
            SendStatus.FAILED,
            to=["a@example.test"],
            message_id=None,
            recipients={},
            refused={},
        )
        telemetry_module.log_outcome(message(1), result, relay=None, duration=0.1)
    finally:
        logging.getLogger("mailer.outcome").setLevel(logging.NOTSET)


def test_the_cli_text_format_builds_no_outcome_record() -> None:
    """`mailer send` in text mode turns the outcome records off, and back after."""
    from mailer.cli.logs import LogFormat, configured_logging

    outcome = logging.getLogger("mailer.outcome")
    assert outcome.isEnabledFor(logging.WARNING)
    with configured_logging(LogFormat.TEXT):
        assert not outcome.isEnabledFor(logging.WARNING)
    assert outcome.isEnabledFor(logging.WARNING)
    with configured_logging(LogFormat.JSON):
        assert outcome.isEnabledFor(logging.INFO)


# -- OpenTelemetry ------------------------------------------------------------


class Exported:
    """An SDK tracer and meter provider that keep everything in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])

    def telemetry(self, settings: MailerSettings) -> OpenTelemetry:
        return OpenTelemetry(
            settings,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
        )

    def finished(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.spans.get_finished_spans())

    def points(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        data = self.metrics.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = list(metric.data.data_points)
        return found


@pytest.fixture
def exported() -> Iterator[Exported]:
    """In-memory OpenTelemetry SDK providers, shut down after the test."""
    providers = Exported()
    yield providers
    providers.tracer_provider.shutdown()
    providers.meter_provider.shutdown()


async def test_span_per_message_with_attempts_as_child_spans(
    make_settings: Callable[..., MailerSettings], exported: Exported
) -> None:
    """A message retried after a 421: one mailer.send span, two smtp.transaction children with the SMTP facts."""
    settings = make_settings(
        smtp_host="smtp.example.test", smtp_port=587, smtp_tls="starttls"
    )
    client = MessageClient(
        settings,
        transport=relay_transport(["421", "250"]),
        telemetry=exported.telemetry(settings),
    )
    result = await client.send(message(1))
    spans = exported.finished()
    [parent] = [s for s in spans if s.name == "mailer.send"]
    attempts = sorted(
        (s for s in spans if s.name == "smtp.transaction"),
        key=lambda s: s.start_time or 0,
    )
    assert len(attempts) == 2
    assert parent.kind is SpanKind.INTERNAL
    assert dict(parent.attributes or {}) == {
        "mailer.recipient_count": 2,
        "mailer.status": "sent",
        "mailer.attempts": 2,
        "mailer.ambiguous": False,
        "mailer.message_id": result.message_id,
        "mailer.relay": "smtp.example.test:587",
        "mailer.reply.code": 250,
        "mailer.reply.enhanced_status": "2.0.0",
    }
    first, second = attempts
    for span in attempts:
        assert span.parent is not None
        assert span.parent.span_id == parent.context.span_id
        assert span.kind is SpanKind.CLIENT
    size = len(client.prepare(message(1), message_id=result.message_id).content)
    assert dict(first.attributes or {}) == {
        "mailer.attempt": 1,
        "mailer.message.size": size,
        "mailer.recipients.deferred": 2,
        "server.address": "smtp.example.test",
        "server.port": 587,
        "mailer.smtp.tls": "starttls",
        "mailer.smtp.reply.code": 421,
        "mailer.smtp.reply.enhanced_status": "4.7.0",
        "error.type": "ConnectError",
    }
    assert first.status.status_code is StatusCode.ERROR
    assert dict(second.attributes or {})["mailer.smtp.reply.code"] == 250
    assert "error.type" not in dict(second.attributes or {})


async def test_metrics_count_outcomes_and_record_latency(
    make_settings: Callable[..., MailerSettings], exported: Exported
) -> None:
    """Counters for sent, failed, deferred attempts; a latency histogram per relay."""
    settings = make_settings(
        smtp_host="smtp.example.test", smtp_port=587, smtp_tls="starttls"
    )
    client = MessageClient(
        settings,
        transport=relay_transport(
            {
                "user1@example.test": ["421", "250"],
                "user2@example.test": ["250"],
                "user3@example.test": ["550"],
            }
        ),
        telemetry=exported.telemetry(settings),
    )
    results = await client.send_many([message(1), message(2), message(3)])
    assert [r.status for r in results] == [
        SendStatus.SENT,
        SendStatus.SENT,
        SendStatus.FAILED,
    ]
    points = exported.points()
    relay = {"mailer.relay": "smtp.example.test:587"}
    assert [(p.value, dict(p.attributes)) for p in points["mailer.messages.sent"]] == [
        (2, relay)
    ]
    assert [
        (p.value, dict(p.attributes)) for p in points["mailer.messages.failed"]
    ] == [(1, relay)]
    assert [
        (p.value, dict(p.attributes)) for p in points["mailer.attempts.deferred"]
    ] == [(1, relay)]
    [latency] = points["mailer.delivery.duration"]
    assert latency.count == 3
    failed_span = [
        s
        for s in exported.finished()
        if s.name == "mailer.send"
        and (s.attributes or {}).get("mailer.status") == "failed"
    ]
    assert failed_span[0].status.status_code is StatusCode.ERROR


async def test_spans_hold_no_secret_body_subject_or_address(
    make_settings: Callable[..., MailerSettings], exported: Exported
) -> None:
    """Every attribute, event and status of every span is free of the password, body, subject and addresses."""
    settings = make_settings(
        smtp_host="smtp.example.test",
        smtp_port=587,
        smtp_tls="starttls",
        smtp_username="shop",
        smtp_password="hunter2-secret",
    )
    client = MessageClient(
        settings,
        transport=relay_transport(["421", "550"]),
        telemetry=exported.telemetry(settings),
    )
    with pytest.raises(RecipientsRefusedError):
        await client.send(message(1))
    spans = exported.finished()
    assert len(spans) == 3
    dumped = "\n".join(span.to_json() for span in spans)
    for secret in (
        "hunter2-secret",
        "493817",
        SUBJECT,
        "user1@",
        "copy@",
        "shop@example",
    ):
        assert secret not in dumped


def test_telemetry_follows_mailer_otel(
    make_settings: Callable[..., MailerSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """on uses OpenTelemetry, auto only once a provider is set, off never; on without the extra is a ConfigError."""
    from mailer.delivery import otel

    assert telemetry_from_settings(make_settings(otel="off")) is None
    assert isinstance(telemetry_from_settings(make_settings(otel="on")), OpenTelemetry)
    assert telemetry_from_settings(make_settings(otel="auto")) is None  # no provider
    monkeypatch.setattr(otel, "is_configured", lambda: True)
    assert isinstance(
        telemetry_from_settings(make_settings(otel="auto")), OpenTelemetry
    )
    monkeypatch.setattr(telemetry_module, "_otel", None)  # as if not installed
    assert telemetry_from_settings(make_settings(otel="auto")) is None
    with pytest.raises(
        ConfigError,
        match=r"^MAILER_OTEL: on, but OpenTelemetry is not installed; pip install 'aiomailer\[otel\]'$",
    ):
        telemetry_from_settings(make_settings(otel="on"))


def test_opentelemetry_is_loaded_only_when_asked_for() -> None:
    """`import mailer` and a client with MAILER_OTEL=off load no opentelemetry module; on does."""
    import subprocess
    import sys

    code = (
        "import sys, mailer\n"
        "from mailer.transports import MemoryTransport\n"
        "settings = mailer.MailerSettings(_env_file=None, otel={otel!r})\n"
        "mailer.MessageClient(settings, transport=MemoryTransport())\n"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))\n"
    )
    loaded = {
        otel: subprocess.run(
            [sys.executable, "-c", code.format(otel=otel)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for otel in ("off", "on")
    }
    assert loaded == {"off": "False", "on": "True"}
