"""Stopping a batch: during its check pass, and mid-batch, without rendering what is left."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

from mailer import MessageClient
from mailer.bulk.sending import send_messages, stream_messages
from mailer.config.settings import MailerSettings
from mailer.delivery.control import StopEvent
from mailer.delivery.results import SendStatus
from mailer.templates import sets
from mailer.transports import MemoryTransport


def rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "email": f"u{n}@example.test",
            "name": f"U {n}",
            "customer_id": n,
            "plan": "pro",
        }
        for n in range(count)
    ]


async def test_a_stop_set_before_the_check_pass_sends_and_renders_nothing(
    settings: MailerSettings,
) -> None:
    """The check pass reads the stop between rows: nothing is rendered or sent, nothing yielded (issue 11.11)."""
    stop = StopEvent()
    stop.set()
    transport = MemoryTransport()
    with (
        patch(
            "mailer.bulk.sending.generate_message_client",
            side_effect=lambda s: MessageClient(s, transport=transport),
        ),
        patch.object(sets, "render_set", wraps=sets.render_set) as rendered,
        patch("mailer.bulk.sending.render_set", rendered),
    ):
        outcomes = [
            outcome
            async for outcome in stream_messages(
                "welcome", rows(50), settings=settings, stop=stop
            )
        ]
    assert outcomes == []
    assert rendered.call_count == 0
    assert len(transport.outbox) == 0


async def test_a_stop_mid_batch_reports_the_rest_pending_without_rendering_it(
    settings: MailerSettings,
) -> None:
    """After the stop, the rows not yet taken are pending with the stop's reason, and never rendered."""
    stop = StopEvent()
    transport = MemoryTransport()
    total = 600
    seen = 0

    def on_result(result: object) -> None:
        nonlocal seen
        seen += 1
        if seen == 1:
            stop.set_reason("interrupted (SIGTERM)")

    with (
        patch(
            "mailer.bulk.sending.generate_message_client",
            side_effect=lambda s: MessageClient(s, transport=transport),
        ),
        patch.object(sets, "render_set", wraps=sets.render_set) as rendered,
        patch("mailer.bulk.sending.render_set", rendered),
    ):
        report = await send_messages(
            "welcome", rows(total), settings=settings, stop=stop, on_result=on_result
        )
    assert report.total == total
    assert report.sent == len(transport.outbox)
    assert report.pending == total - report.sent
    assert report.pending > 0
    pending = [r for r in report.results if r.status is SendStatus.PENDING]
    assert {r.error for r in pending} == {"not sent: interrupted (SIGTERM)"}
    # The check pass renders every row once; the send pass only what it took.
    assert rendered.call_count - total < total - report.pending + 200
    assert [r.to for r in report.results] == [
        (f"u{n}@example.test",) for n in range(total)
    ]
