"""Streaming batches: client.stream, async sources, and send_messages reading lazily."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from unittest.mock import patch

import pytest

from mailer import InvalidRecipientsError, InvalidRow, Message, MessageClient
from mailer.bulk.sending import send_messages, stream_messages
from mailer.config.settings import MailerSettings
from mailer.delivery.client import BATCH_DEPTH
from mailer.delivery.control import WAITING_ROOM
from mailer.testing import SentMail
from mailer.transports import MemoryTransport, MockTransport


def message(n: int) -> Message:
    return Message(to=f"user{n}@example.test", subject=f"Message {n}", body="b")


def row(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": f"user{n}@example.test",
        "name": f"User {n}",
        "customer_id": f"C-{n}",
        "plan": "basic",
        **extra,
    }


async def test_stream_yields_each_result_with_its_position_as_it_completes(
    settings: MailerSettings,
) -> None:
    """client.stream: (index, result) pairs, quickest first, indexes from 0."""

    # Message 0 goes alone (the first-attempt gate); 1 to 3 then run together.
    async def slow_second(mail: SentMail) -> None:
        await asyncio.sleep(0.05 if mail.subject == "Message 1" else 0)

    async with MessageClient(settings, transport=MockTransport(slow_second)) as client:
        pairs = [pair async for pair in client.stream(message(n) for n in range(4))]
    assert sorted(index for index, _ in pairs) == [0, 1, 2, 3]
    assert pairs[-1][0] == 1
    assert all(result.to == (f"user{index}@example.test",) for index, result in pairs)


async def test_send_many_takes_an_async_generator(settings: MailerSettings) -> None:
    """Messages from an async generator are sent; results come in input order."""

    async def messages() -> AsyncIterator[Message]:
        for n in range(5):
            await asyncio.sleep(0)
            yield message(n)

    transport = MemoryTransport()
    async with MessageClient(settings, transport=transport) as client:
        results = await client.send_many(messages())
    assert [r.to[0] for r in results] == [f"user{n}@example.test" for n in range(5)]
    assert len(transport.outbox) == 5


async def test_stream_reads_messages_only_as_sends_finish(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """A long generator is never read far ahead of the sends that finished."""
    settings = make_settings(concurrency=2)
    pulled = finished = 0
    lead: list[int] = []

    def messages() -> Iterator[Message]:
        nonlocal pulled
        for n in range(500):
            pulled += 1
            lead.append(pulled - finished)
            yield message(n)

    async def slow(mail: SentMail) -> None:
        nonlocal finished
        await asyncio.sleep(0.001)
        finished += 1

    async with MessageClient(settings, transport=MockTransport(slow)) as client:
        count = sum([1 async for _ in client.stream(messages())])
    assert count == 500
    # The transactions in flight, and room for messages waiting to retry.
    assert max(lead) <= 2 * BATCH_DEPTH + WAITING_ROOM


@pytest.fixture
def outbox(settings: MailerSettings) -> Iterator[MemoryTransport]:
    """Route send_messages to an in-memory transport."""
    transport = MemoryTransport()
    with patch(
        "mailer.bulk.sending.generate_message_client",
        side_effect=lambda s: MessageClient(s, transport=transport),
    ):
        yield transport


async def test_send_messages_reads_an_async_source(
    settings: MailerSettings, outbox: MemoryTransport
) -> None:
    """Rows from an async iterable are checked, then sent."""

    async def rows() -> AsyncIterator[dict[str, Any]]:
        for n in range(3):
            yield row(n)

    report = await send_messages("welcome", rows(), settings=settings)
    assert (report.sent, report.failed, report.invalid) == (3, 0, 0)
    assert [r.to[0] for r in report.results] == [
        f"user{n}@example.test" for n in range(3)
    ]


async def test_a_bad_row_in_an_async_source_stops_the_batch_first(
    settings: MailerSettings, outbox: MemoryTransport
) -> None:
    """Without skip_invalid an async source is still checked before any send."""

    async def rows() -> AsyncIterator[dict[str, Any]]:
        yield row(1)
        yield row(2, email="broken")

    with pytest.raises(InvalidRecipientsError, match="line 2"):
        await send_messages("welcome", rows(), settings=settings)
    assert outbox.outbox == []


async def test_skip_invalid_streams_a_one_shot_source_once(
    settings: MailerSettings, outbox: MemoryTransport
) -> None:
    """With skip_invalid a generator is read once, lazily, not collected first."""
    pulled = 0
    pulled_at_first_result: list[int] = []

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal pulled
        for n in range(1, 301):
            pulled += 1
            yield row(n, email="broken") if n == 50 else row(n)

    def first(result: object) -> None:
        if not pulled_at_first_result:
            pulled_at_first_result.append(pulled)

    report = await send_messages(
        "welcome", rows(), settings=settings, skip_invalid=True, on_result=first
    )
    assert (report.sent, report.invalid) == (299, 1)
    [bad] = report.invalid_rows
    assert bad.line == 50
    assert bad.error.startswith("to: invalid address 'broken'")
    # Read ahead by the sends in flight and the room for retries (and the bad
    # row, which is no message), not more.
    ahead = settings.concurrency * BATCH_DEPTH + WAITING_ROOM + 1
    assert pulled_at_first_result[0] <= ahead
    assert len(report.results) == 299
    assert [r.to[0] for r in report.results][:2] == [
        "user1@example.test",
        "user2@example.test",
    ]


async def test_stream_messages_yields_lines_with_results_and_bad_rows(
    settings: MailerSettings, outbox: MemoryTransport
) -> None:
    """stream_messages: (line, SendResult) per message and (line, InvalidRow) per bad row."""
    rows = [row(1), row(2, email="broken"), row(3)]
    outcomes = [
        pair
        async for pair in stream_messages(
            "welcome", rows, settings=settings, skip_invalid=True
        )
    ]
    by_line = dict(outcomes)
    assert sorted(by_line) == [1, 2, 3]
    assert isinstance(by_line[2], InvalidRow)
    sent = by_line[1]
    assert not isinstance(sent, InvalidRow)
    assert sent.to == ("user1@example.test",)
    assert sent.is_sent


async def test_reports_keep_input_order_whatever_the_completion_order(
    settings: MailerSettings,
) -> None:
    """report.results follow the rows even when later rows finish first."""

    async def slow_first(mail: SentMail) -> None:
        await asyncio.sleep(0.03 if mail.to == ("user1@example.test",) else 0)

    with patch(
        "mailer.bulk.sending.generate_message_client",
        side_effect=lambda s: MessageClient(s, transport=MockTransport(slow_first)),
    ):
        report = await send_messages(
            "welcome", [row(1), row(2), row(3)], settings=settings
        )
    assert [r.to[0] for r in report.results] == [
        "user1@example.test",
        "user2@example.test",
        "user3@example.test",
    ]


async def test_keep_results_off_counts_without_keeping(
    settings: MailerSettings, outbox: MemoryTransport
) -> None:
    """keep_results=False: the counts are right and no result is held."""
    seen: list[str] = []
    report = await send_messages(
        "welcome",
        [row(n) for n in range(10)],
        settings=settings,
        keep_results=False,
        on_result=lambda r: seen.append(r.to[0]),
    )
    assert (report.sent, report.total) == (10, 10)
    assert report.results == []
    assert len(seen) == 10
