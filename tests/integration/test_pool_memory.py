"""What the connection pool keeps while one connection carries a long run of messages.

Found by attacking per-row attachments: a batch in which each row has its own
2 MB file grew by ~2.7 MB per message sent (300 rows: 1.66 GB peak RSS),
because a lane kept every message of a pipelined exchange, content included,
until the connection's last message (MAILER_POOL_MAX_MESSAGES, 100 by default).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from mailer import Message, MessageClient, SendResult
from mailer.config.settings import MailerSettings
from mailer.testing import END_OF_DATA, SMTPTestServer
from mailer.transports.smtp.transactions import Transaction

SETTLED_BEFORE_THE_STALL = 20


def _settled_transactions() -> list[Transaction]:
    gc.collect()
    return [
        item
        for item in gc.get_objects()
        if isinstance(item, Transaction) and item.outcome.done()
    ]


async def test_a_lane_keeps_no_settled_message_while_its_connection_goes_on(
    smtp_server: SMTPTestServer,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """Twenty messages answered on a connection still in use are no longer held."""
    # The 21st message's final reply waits: the connection (and the lane's
    # exchange) is then busy, with twenty messages behind it settled.
    smtp_server.faults.delay(END_OF_DATA, 30.0, times=1, after=SETTLED_BEFORE_THE_STALL)
    settings = settings_for(smtp_server, concurrency=1, message_timeout=60)
    body = "x" * 200_000 + "\n"
    async with MessageClient(settings) as client:
        sends = [
            asyncio.create_task(
                client.send(Message(to=f"u{n}@example.test", subject="s", body=body))
            )
            for n in range(SETTLED_BEFORE_THE_STALL + 5)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while sum(task.done() for task in sends) < SETTLED_BEFORE_THE_STALL:
            assert loop.time() < deadline, "the first messages were not answered"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        # The exchange is still running: the stalled message is not answered.
        assert sum(task.done() for task in sends) == SETTLED_BEFORE_THE_STALL
        held = _settled_transactions()
        for task in sends:
            task.cancel()
        await asyncio.gather(*sends, return_exceptions=True)
    assert len(held) <= 1, f"{len(held)} settled messages (with their content) kept"


async def test_every_message_of_a_long_exchange_is_still_sent(
    smtp_server: SMTPTestServer,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """Releasing settled messages changes nothing on the wire: 60 go on 1 connection."""
    settings = settings_for(smtp_server, concurrency=1)
    async with MessageClient(settings) as client:
        results: list[SendResult] = await client.send_many(
            Message(to=f"u{n}@example.test", subject=f"n{n}", body="b\n")
            for n in range(60)
        )
    assert all(result.is_sent for result in results)
    assert sorted(mail.subject for mail in smtp_server.outbox) == sorted(
        f"n{n}" for n in range(60)
    )
    assert {mail.session.number for mail in smtp_server.outbox if mail.session} == {1}
