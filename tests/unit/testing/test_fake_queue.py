"""The fake mail queue: assert_enqueued, run_jobs into the outbox, no database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailer import ConfigError, MailerSettings, Message, TemplateError
from mailer.queue import enqueue, send_later, send_later_template
from mailer.testing import Addr, Contains, FakeQueue, Mail, Outbox, fake_queue

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


async def place_order(order: int, email: str, settings: MailerSettings) -> str:
    """Application code: enqueue a receipt."""
    return await send_later(
        Message(to=email, subject=f"Receipt for order {order}", body="Thanks"),
        settings=settings,
    )


async def test_assert_enqueued_finds_the_message_and_its_message_id(
    mail_queue: FakeQueue, mailer_settings: Callable[..., MailerSettings]
) -> None:
    """What send_later enqueued is matched like sent mail; the ID is the returned one."""
    message_id = await place_order(7, "bob@example.test", mailer_settings())
    mail_queue.assert_enqueued(Mail(to=Addr("bob@example.test"), subject=Contains("7")))
    mail_queue.assert_enqueued(count=1, message_id=message_id)
    mail_queue.assert_not_enqueued(to=Addr("eve@example.test"))
    [job] = mail_queue.jobs
    assert job.message_id == message_id
    assert job.message.sender == mailer_settings().default_sender


async def test_a_failed_assertion_names_the_queue_and_the_nearest_miss(
    mail_queue: FakeQueue, mailer_settings: Callable[..., MailerSettings]
) -> None:
    """The message says it is about the queue and which field differed."""
    await place_order(1, "bob@example.test", mailer_settings())
    with pytest.raises(AssertionError, match=r"mail queue: expected .*subject"):
        mail_queue.assert_enqueued(subject="Invoice")


async def test_nothing_enqueued_says_so(mail_queue: FakeQueue) -> None:
    """An empty queue passes assert_nothing_enqueued and fails assert_enqueued."""
    mail_queue.assert_nothing_enqueued()
    with pytest.raises(AssertionError, match="nothing was enqueued"):
        mail_queue.assert_enqueued()


async def test_run_jobs_sends_into_the_outbox_with_the_same_message_ids(
    mail_queue: FakeQueue,
    mail_outbox: Outbox,
    mailer_settings: Callable[..., MailerSettings],
) -> None:
    """Like Rails' deliver_enqueued_emails: sent through generate_message_client()."""
    first = await place_order(1, "ann@example.test", mailer_settings())
    second = await place_order(2, "bob@example.test", mailer_settings())
    mail_outbox.assert_nothing_sent()
    results = await mail_queue.run_jobs(mailer_settings())
    assert [r.message_id for r in results] == [first, second]
    assert [m.message["Message-ID"] for m in mail_outbox] == [first, second]
    assert mail_queue.jobs == []
    mail_queue.assert_enqueued(count=2)  # the record stays


async def test_the_message_is_checked_at_enqueue_time_as_for_the_database(
    mail_queue: FakeQueue, mailer_settings: Callable[..., MailerSettings]
) -> None:
    """No sender, a missing template variable: raised to the caller, nothing kept."""
    settings = mailer_settings(from_=None, templates_dir=EXAMPLES / "templates")
    with pytest.raises(ConfigError, match="MAILER_FROM"):
        await place_order(1, "bob@example.test", settings)
    with pytest.raises(TemplateError, match="customer_id"):
        await send_later_template(
            "welcome", to="bob@example.test", context={"name": "Bob"},
            settings=mailer_settings(templates_dir=EXAMPLES / "templates"),
        )  # fmt: skip
    mail_queue.assert_nothing_enqueued()


async def test_send_later_template_records_the_template_name(
    mail_queue: FakeQueue, mailer_settings: Callable[..., MailerSettings]
) -> None:
    """The rendered message and the set it came from are both kept."""
    await send_later_template(
        "welcome",
        to="bob@example.test",
        context={"name": "Bob", "customer_id": "C-1", "plan": "pro"},
        settings=mailer_settings(templates_dir=EXAMPLES / "templates"),
    )
    [job] = mail_queue.jobs
    assert job.template == "welcome"
    mail_queue.assert_enqueued(subject="Welcome to Example Shop, Bob!")


def test_the_fake_is_undone_after_its_block() -> None:
    """fake_queue() restores the real queue, even when the block raises."""
    assert enqueue.queue_override is None
    seen: list[object] = []

    def fails_inside() -> None:
        with fake_queue() as queue:
            seen.append(queue)
            assert enqueue.queue_override is queue
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fails_inside()
    assert len(seen) == 1
    assert enqueue.queue_override is None
