"""The queue between senders and lanes: hand-over, idle limits, close, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from mailer.content.message import Envelope
from mailer.transports.smtp.transactions import Transaction, TransactionQueue


def transaction() -> Transaction:
    return Transaction(Envelope("a@example.test", ("b@example.test",)), b"x\r\n")


async def test_a_waiting_lane_gets_the_transaction_directly() -> None:
    """put() hands the transaction to a lane that waits, without queueing it."""
    queue = TransactionQueue()
    waiting = asyncio.create_task(queue.take(None))
    await asyncio.sleep(0)
    sent = transaction()
    assert queue.put(sent) is True
    assert await waiting is sent
    assert len(queue) == 0


async def test_without_a_waiting_lane_the_transaction_is_queued() -> None:
    """put() with nobody waiting queues; the next take returns it at once."""
    queue = TransactionQueue()
    sent = transaction()
    assert queue.put(sent) is False
    assert len(queue) == 1
    assert await queue.take(None) is sent


async def test_an_idle_lane_gives_up_after_its_limit() -> None:
    """take(idle_limit) returns None when nothing came in time."""
    queue = TransactionQueue()
    assert await queue.take(0.01) is None
    assert queue.put(transaction()) is False  # the timed-out lane left no waiter


async def test_abandoned_transactions_are_skipped() -> None:
    """A transaction whose sender gave up is never handed to a lane."""
    queue = TransactionQueue()
    gone, live = transaction(), transaction()
    gone.outcome.cancel()
    queue.put(gone)
    queue.put(live)
    assert queue.take_nowait() is live
    assert queue.take_nowait() is None


async def test_closing_releases_waiting_lanes_after_the_work_is_done() -> None:
    """close(): waiting lanes get None; queued work is still handed out first."""
    queue = TransactionQueue()
    waiting = asyncio.create_task(queue.take(None))
    await asyncio.sleep(0)
    queue.close()
    assert await waiting is None
    queue.put(late := transaction())
    assert await queue.take(None) is late
    assert await queue.take(None) is None


async def test_a_lane_cancelled_as_it_was_handed_work_gives_it_back() -> None:
    """Cancelled right after a hand-over, the lane puts the transaction back."""
    queue = TransactionQueue()
    waiting = asyncio.create_task(queue.take(None))
    await asyncio.sleep(0)
    sent = transaction()
    queue.put(sent)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert queue.take_nowait() is sent
