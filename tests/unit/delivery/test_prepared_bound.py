"""A batch prepares (serialises) only as many new messages as it can have in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mailer import MailerSettings, Message, MessageClient
from mailer.records import SentMail
from mailer.testing.fakes import MockTransport


async def test_new_messages_wait_unprepared_while_every_slot_is_busy(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """With the transport stuck, 300 queued messages hold no serialised bytes beyond in_flight."""
    release = asyncio.Event()
    started = asyncio.Event()

    async def stuck(mail: SentMail) -> None:
        started.set()
        await release.wait()

    client = MessageClient(make_settings(), transport=MockTransport(stuck))
    prepared = 0
    real_prepare = client.prepare

    def counting(message: Message, /, **options: object) -> object:
        nonlocal prepared
        prepared += 1
        return real_prepare(message, **options)  # type: ignore[arg-type]

    client.prepare = counting  # type: ignore[method-assign,assignment]
    messages = [
        Message(to=f"r{n}@example.test", subject="s", body="b") for n in range(300)
    ]
    batch = asyncio.create_task(client.send_many(messages, in_flight=3))
    # The first attempt runs alone (the batch's gate) and hangs in the transport.
    await asyncio.wait_for(started.wait(), 30)
    for _ in range(50):
        await asyncio.sleep(0)  # let every runnable send reach its wait
    # Before: every running send (in_flight + a waiting room of 100) had
    # prepared its bytes, 103 messages' worth, each holding its attachments.
    assert prepared == 3  # one in the transport, two waiting for the gate
    release.set()
    results = await asyncio.wait_for(batch, 60)
    assert all(result.is_sent for result in results)
    assert prepared == 300
