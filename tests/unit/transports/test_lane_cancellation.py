"""A lane stops when cancelled, even when a cancellation is lost on the way (no sockets)."""

from __future__ import annotations

import asyncio

from mailer.config.settings import MailerSettings
from mailer.content.message import Envelope
from mailer.transports.smtp.connection import SMTPConnection
from mailer.transports.smtp.lane import Lane
from mailer.transports.smtp.transactions import (
    PoolLimits,
    Transaction,
    TransactionQueue,
)


class SwallowingConnection(SMTPConnection):
    """Opens the way aiosmtplib reads a reply: through ``asyncio.wait_for``.

    The test answers the "greeting" and cancels the lane in the same loop
    iteration; on Python 3.11, ``wait_for`` then returns the reply and drops
    the cancellation, as it does inside aiosmtplib.
    """

    def __init__(self, settings: MailerSettings, opening: asyncio.Event) -> None:
        super().__init__(settings)
        self.reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._opening = opening

    async def open(self) -> None:
        self._opening.set()
        await asyncio.wait_for(self.reply, timeout=60)


async def test_a_lane_whose_cancellation_was_swallowed_still_stops(
    settings: MailerSettings,
) -> None:
    """Cancelled as a reply arrives (lost in wait_for): the lane ends, not waits."""
    queue = TransactionQueue()
    opening = asyncio.Event()
    connections: list[SwallowingConnection] = []

    def new_connection() -> SMTPConnection:
        connections.append(SwallowingConnection(settings, opening))
        return connections[-1]

    lane = Lane(queue, new_connection, PoolLimits(size=1), 5.0, 5.0)
    task = asyncio.create_task(lane.run())
    sent = Transaction(Envelope("a@example.test", ("b@example.test",)), b"x\r\n")
    queue.put(sent)
    await opening.wait()
    connections[0].reply.set_result("220 ready")
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done == {task}
    assert task.cancelled()
    assert sent.outcome.done()  # the sender is not left waiting either


async def test_a_lane_cancelled_while_it_waits_for_work_stops_at_once() -> None:
    """An idle lane (queue open, nothing queued) ends as soon as it is cancelled."""
    queue = TransactionQueue()

    def new_connection() -> SMTPConnection:
        raise AssertionError("an idle lane opens nothing")

    lane = Lane(queue, new_connection, PoolLimits(size=1), 5.0, 5.0)
    task = asyncio.create_task(lane.run())
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done == {task}
    assert task.cancelled()
