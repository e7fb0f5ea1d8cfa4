"""send_messages with hooks: each row's message passes them, with or without a journal."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

from mailer import (
    Hooks,
    MailerSettings,
    Message,
    MessageClient,
    Refuse,
    SendResult,
    SendStatus,
    send_messages,
)
from mailer.transports import MemoryTransport

ROWS = [
    {
        "email": f"user{n}@example.test",
        "name": f"User {n}",
        "customer_id": f"C-{n}",
        "plan": "pro",
    }
    for n in range(1, 4)
]


def unsubscribed(message: Message) -> Message | Refuse:
    if message.to[0].addr_spec == "user2@example.test":
        return Refuse("unsubscribed")
    return dataclasses.replace(
        message, headers=(*message.headers, ("X-Batch", "spring"))
    )


async def test_send_messages_runs_the_hooks_it_is_given(
    settings: MailerSettings,
) -> None:
    """A before hook tags or refuses each row's message; after_send sees all three results."""
    transport = MemoryTransport()
    seen: list[tuple[str, str]] = []
    hooks = Hooks(
        before_send=[unsubscribed],
        after_send=[lambda m, r: seen.append((m.to[0].addr_spec, r.status.value))],
    )
    with patch(
        "mailer.bulk.sending.generate_message_client",
        side_effect=lambda s: MessageClient(s, transport=transport),
    ):
        report = await send_messages("welcome", ROWS, settings=settings, hooks=hooks)
    assert (report.sent, report.failed) == (2, 1)
    assert [r.error for r in report.results if r.status is SendStatus.FAILED] == [
        "refused by tests.unit.bulk.test_sending_hooks.unsubscribed: unsubscribed"
    ]
    assert all(m.header("X-Batch") == "spring" for m in transport.outbox)
    assert sorted(seen) == [
        ("user1@example.test", "sent"),
        ("user2@example.test", "failed"),
        ("user3@example.test", "sent"),
    ]


async def test_refusal_is_final_in_the_journal(
    settings: MailerSettings, tmp_path: Path
) -> None:
    """With a journal a refused message is recorded failed: a resume neither asks the hook again nor sends it."""
    transport = MemoryTransport()
    asked: list[str] = []

    def counting(message: Message) -> Message | Refuse:
        asked.append(message.to[0].addr_spec)
        return unsubscribed(message)

    journal = tmp_path / "batch.db"
    results: list[list[SendResult]] = []
    with patch(
        "mailer.bulk.sending.generate_message_client",
        side_effect=lambda s: MessageClient(s, transport=transport),
    ):
        for _ in range(2):
            report = await send_messages(
                "welcome",
                ROWS,
                settings=settings,
                journal=journal,
                hooks=Hooks(before_send=[counting]),
            )
            results.append(report.results)
    first, second = results
    assert [r.status for r in first] == [
        SendStatus.SENT,
        SendStatus.FAILED,
        SendStatus.SENT,
    ]
    assert [r.status for r in second] == [
        SendStatus.SENT,
        SendStatus.FAILED,
        SendStatus.SENT,
    ]
    assert second[1].error is not None
    assert "unsubscribed" in second[1].error
    assert sorted(asked) == [
        "user1@example.test",
        "user2@example.test",
        "user3@example.test",
    ]
    assert len(transport.outbox) == 2


async def test_hooks_from_settings_apply_to_send_messages(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """MAILER_REDIRECT_TO redirects every row of a batch (what the CLI relies on)."""
    transport = MemoryTransport()
    settings = make_settings(redirect_to="sandbox@example.test")
    with patch(
        "mailer.bulk.sending.generate_message_client",
        side_effect=lambda s: MessageClient(s, transport=transport),
    ):
        report = await send_messages("welcome", ROWS, settings=settings)
    assert report.sent == 3
    assert {m.envelope.rcpt_tos for m in transport.outbox} == {
        ("sandbox@example.test",)
    }
    assert sorted(m.header("X-Mailer-Original-To") or "" for m in transport.outbox) == [
        "user1@example.test",
        "user2@example.test",
        "user3@example.test",
    ]
