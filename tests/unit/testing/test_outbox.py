"""Outbox: finding, asserting with nearest-miss messages, capturing and waiting."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mailer import Address, Message
from mailer.testing import Contains, Mail, Outbox, SentMail

SENDER = Address.parse("shop@example.test", field="sender")


def record(subject: str, to: str = "bob@example.test", **fields: object) -> SentMail:
    message = Message(to=to, subject=subject, body=f"{subject} body\n", **fields)  # type: ignore[arg-type]
    return SentMail(envelope=message.envelope(SENDER), raw=message.to_bytes(SENDER))


@pytest.fixture
def outbox() -> Outbox:
    """An Outbox holding three records: one to ann, two to bob (one with a Bcc)."""
    box = Outbox()
    box.append(record("Welcome", "ann@example.test"))
    box.append(record("Reset your password", "bob@example.test"))
    box.append(record("Receipt", "bob@example.test", bcc="audit@example.test"))
    return box


def test_it_is_a_sequence(outbox: Outbox) -> None:
    """len, indexing, slicing, iteration and last."""
    assert len(outbox) == 3
    assert outbox[0].subject == "Welcome"
    assert [m.subject for m in outbox[1:]] == ["Reset your password", "Receipt"]
    assert [m.subject for m in outbox] == ["Welcome", "Reset your password", "Receipt"]
    assert outbox.last.subject == "Receipt"
    assert outbox == list(outbox)
    assert Outbox() == []
    assert Outbox() == ()
    assert outbox != []
    assert (
        repr(outbox)
        == "<Outbox of 3 mail(s): ['Welcome', 'Reset your password', 'Receipt']>"
    )


def test_filter_and_one_take_matchers_predicates_or_fields(outbox: Outbox) -> None:
    """The three ways of saying which mail: Mail(...), a predicate, keywords."""
    assert [m.subject for m in outbox.filter(to="bob@example.test")] == [
        "Reset your password",
        "Receipt",
    ]
    assert outbox.filter(lambda m: m.subject.startswith("W"))[0].subject == "Welcome"
    assert outbox.one(Mail(bcc=["audit@example.test"])).subject == "Receipt"
    assert len(outbox.filter()) == 3
    with pytest.raises(TypeError, match="not both"):
        outbox.filter(Mail(), to="x@example.test")


def test_one_fails_on_none_and_on_several(outbox: Outbox) -> None:
    """one() names the nearest miss, or lists the matches when there are several."""
    with pytest.raises(AssertionError) as none:
        outbox.one(subject=Contains("Invoice"), to="bob@example.test")
    assert str(none.value) == (
        "expected exactly 1 mail matching Mail(subject=Contains('Invoice'), "
        "to='bob@example.test'); 0 of 3 matched. Nearest miss: #1 "
        "subject='Reset your password' to=['bob@example.test']: "
        "subject: wanted Contains('Invoice'), got 'Reset your password'"
    )
    with pytest.raises(AssertionError, match=r"2 of 3 matched: #1 .*; #2 "):
        outbox.one(to="bob@example.test")


def test_assert_sent_with_and_without_count(outbox: Outbox) -> None:
    """assert_sent returns the matches; count= demands an exact number."""
    found = outbox.assert_sent(to="bob@example.test")
    assert len(found) == 2
    outbox.assert_sent(to="bob@example.test", count=2)
    with pytest.raises(AssertionError, match="expected exactly 1 mail matching"):
        outbox.assert_sent(to="bob@example.test", count=1)
    with pytest.raises(
        AssertionError, match="expected at least 1 mail matching .*Nearest miss"
    ):
        outbox.assert_sent(subject="Invoice")


def test_assert_not_sent_and_nothing_sent(outbox: Outbox) -> None:
    """assert_not_sent lists what matched; assert_nothing_sent what was sent."""
    outbox.assert_not_sent(subject="Invoice")
    with pytest.raises(
        AssertionError, match=r"expected exactly 0 .*: #0 subject='Welcome'"
    ):
        outbox.assert_not_sent(subject="Welcome")
    with pytest.raises(AssertionError, match="0 mail; 3 of 3 matched"):
        outbox.assert_nothing_sent()
    Outbox().assert_nothing_sent()


def test_assert_sent_count(outbox: Outbox) -> None:
    """assert_sent_count lists what was sent when the number is wrong."""
    outbox.assert_sent_count(3)
    with pytest.raises(
        AssertionError, match=r"expected 2 mail\(s\) sent, got 3: #0 subject='Welcome'"
    ):
        outbox.assert_sent_count(2)
    with pytest.raises(AssertionError, match=r"^expected 1 mail\(s\) sent, got 0$"):
        Outbox().assert_sent_count(1)


def test_an_empty_outbox_says_so() -> None:
    """last and assertions on an empty outbox explain that nothing was sent."""
    with pytest.raises(AssertionError, match="the outbox is empty"):
        _ = Outbox().last
    with pytest.raises(AssertionError, match=r"0 of 0 matched \(nothing was sent\)"):
        Outbox().assert_sent(subject="x")


def test_clear_and_capture(outbox: Outbox) -> None:
    """clear() empties; capture() collects only what is sent inside the block."""
    with outbox.capture() as captured:
        outbox.append(record("Inside"))
    outbox.append(record("After"))
    assert [m.subject for m in captured] == ["Inside"]
    outbox.clear()
    assert len(outbox) == 0


async def test_wait_for_mail_sent_later_by_another_task() -> None:
    """wait_for returns as soon as enough matching mail arrived."""
    outbox = Outbox()

    async def later() -> None:
        await asyncio.sleep(0.02)
        outbox.append(record("Other"))
        await asyncio.sleep(0.02)
        outbox.append(record("Wanted"))

    task = asyncio.create_task(later())
    started = time.monotonic()
    [mail] = await outbox.wait_for(subject="Wanted", timeout=5)
    await task
    assert mail.subject == "Wanted"
    assert time.monotonic() - started < 2


async def test_wait_for_mail_sent_from_another_thread() -> None:
    """Mail appended by a thread (a threaded server) wakes an async waiter."""
    outbox = Outbox()
    thread = threading.Timer(0.05, lambda: outbox.append(record("Threaded")))
    thread.start()
    found = await outbox.wait_for(subject="Threaded", count=1, timeout=5)
    thread.join()
    assert [m.subject for m in found] == ["Threaded"]


async def test_wait_for_times_out_with_the_nearest_miss() -> None:
    """When the mail does not come, the error says what came instead."""
    outbox = Outbox()
    outbox.append(record("Welcome"))
    with pytest.raises(
        AssertionError,
        match=r"after waiting 0.05s: expected at least 1 .*Nearest miss: #0",
    ):
        await outbox.wait_for(subject="Reset", timeout=0.05)


def test_wait_for_blocking_for_synchronous_tests() -> None:
    """wait_for_blocking waits on a thread's mail, and times out with a message."""
    outbox = Outbox()
    thread = threading.Timer(0.05, lambda: outbox.append(record("Sync")))
    thread.start()
    assert outbox.wait_for_blocking(subject="Sync", timeout=5)[0].subject == "Sync"
    thread.join()
    with pytest.raises(AssertionError, match="expected at least 2 mail matching"):
        outbox.wait_for_blocking(subject="Sync", count=2, timeout=0.05)
