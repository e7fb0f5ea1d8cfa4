"""Public-API usage that only mypy checks: the types users see must line up."""

from __future__ import annotations

from collections.abc import AsyncIterator

from mailer import (
    BatchReport,
    InvalidRow,
    MailerSettings,
    Message,
    MessageClient,
    SendResult,
    generate_message_client,
    render,
    send_messages,
    stream_messages,
)
from mailer.transports import MemoryTransport, Transport


async def send_one() -> SendResult:
    settings = MailerSettings(_env_file=None, from_="a@example.test")
    transport: Transport = MemoryTransport()
    async with MessageClient(settings, transport=transport) as client:
        message = Message(
            to=["a@example.test"], subject="s", body="b", headers={"X-A": "1"}
        )
        return await client.send(message)


async def send_batch() -> BatchReport:
    client = generate_message_client()
    async with client:
        results: list[SendResult] = await client.send_many([])
    assert not results
    return await send_messages("welcome", [{"email": "a@example.test", "name": "A"}])


def render_one() -> Message:
    return render("welcome", to="a@example.test", context={"name": "A"})


async def stream_batch(
    messages: AsyncIterator[Message],
) -> list[tuple[int, SendResult]]:
    async with MessageClient(MailerSettings(_env_file=None)) as client:
        return [pair async for pair in client.stream(messages)]


async def stream_rows() -> int:
    failed = 0
    async for line, outcome in stream_messages("welcome", [{"email": "a@x.test"}]):
        if isinstance(outcome, InvalidRow) or not outcome.is_sent:
            failed += line > 0
    return failed
