"""send_later and the worker against a real PostgreSQL and a real SMTP server."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from procrastinate import PsycopgConnector

from mailer import MailerSettings, Message, QueueError, TemplateError
from mailer.delivery import retry
from mailer.queue import send_later, send_later_template
from mailer.queue.locks import LOCK_SPACE
from mailer.queue.schema import apply_schema
from mailer.queue.worker import run_worker
from mailer.testing import SMTPTestServer

from .conftest import worker_running


def receipt(n: int = 1) -> Message:
    return Message(to=f"customer{n}@example.test", subject=f"Order {n}", body="Thanks")


async def wait_for(condition: Callable[[], Any], within: float = 20.0) -> None:
    """Poll until ``condition()`` (database or server state has no event to await)."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_send_later_returns_the_message_id_the_worker_sends_with(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    query: Any,
) -> None:
    """The Message-ID returned at enqueue time is the one the server receives."""
    settings = queue_settings(smtp_server)
    message_id = await send_later(receipt(), settings=settings)
    [(state,)] = await query("SELECT state FROM mailer_messages")
    assert state == "pending"
    async with worker_running(settings):
        [mail] = await smtp_server.outbox.wait_for(subject="Order 1", timeout=20)
    assert mail.message["Message-ID"] == message_id
    assert await query("SELECT state, attempts, ambiguous FROM mailer_messages") == [
        ("sent", 1, False)
    ]


async def test_a_rolled_back_transaction_sends_nothing_and_a_committed_one_sends(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    queue_database: str,
    query: Any,
) -> None:
    """The outbox: the job commits or rolls back with the caller's own writes."""
    settings = queue_settings(smtp_server)
    async with await psycopg.AsyncConnection.connect(queue_database) as connection:
        await connection.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        await connection.commit()

        async def declined_order() -> None:
            async with connection.transaction():
                await connection.execute("INSERT INTO orders VALUES (1)")
                await send_later(receipt(1), connection=connection, settings=settings)
                raise RuntimeError("payment declined")

        with pytest.raises(RuntimeError, match="payment declined"):
            await declined_order()
        async with connection.transaction():
            await connection.execute("INSERT INTO orders VALUES (2)")
            kept = await send_later(
                receipt(2), connection=connection, settings=settings
            )
    assert await query("SELECT id FROM orders") == [(2,)]
    async with worker_running(settings):
        await smtp_server.outbox.wait_for(subject="Order 2", timeout=20)

        async def queue_drained() -> bool:
            jobs = await query(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            )
            return bool(jobs == [(0,)])

        await wait_for(queue_drained)
    assert [mail.subject for mail in smtp_server.outbox] == ["Order 2"]
    assert [mail.message["Message-ID"] for mail in smtp_server.outbox] == [kept]
    assert await query("SELECT message_id, state FROM mailer_messages") == [
        (kept, "sent")
    ]


async def test_send_later_through_an_open_procrastinate_connector(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    queue_database: str,
) -> None:
    """A procrastinate connector's pool carries the enqueue; the worker sends it."""
    settings = queue_settings(smtp_server)
    connector = PsycopgConnector(conninfo=queue_database, min_size=1, max_size=2)
    await connector.open_async()
    try:
        message_id = await send_later(receipt(), connector=connector, settings=settings)
    finally:
        await connector.close_async()
    async with worker_running(settings):
        [mail] = await smtp_server.outbox.wait_for(subject="Order 1", timeout=20)
    assert mail.message["Message-ID"] == message_id


async def test_send_later_template_renders_before_anything_is_enqueued(
    queue_settings: Callable[..., MailerSettings], query: Any
) -> None:
    """A template error reaches the caller; no row and no job are written."""
    settings = queue_settings()
    with pytest.raises(TemplateError, match="customer_id"):
        await send_later_template(
            "welcome", to="ann@example.test", context={"name": "Ann"}, settings=settings
        )
    message_id = await send_later_template(
        "welcome",
        to="ann@example.test",
        context={"name": "Ann", "customer_id": "C-1", "plan": "pro"},
        settings=settings,
    )
    assert await query("SELECT message_id FROM mailer_messages") == [(message_id,)]
    assert await query("SELECT count(*) FROM procrastinate_jobs") == [(1,)]


class _LongestWait(random.Random):
    """Jitter that always waits the whole cap, so the retry time is known."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_a_deferred_message_gets_a_retry_job_instead_of_a_sleeping_worker(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    query: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 451 ends the job: state 'deferred', a retry job scheduled 60 s on, no job held."""
    monkeypatch.setattr(retry, "_RANDOM", _LongestWait())
    settings = queue_settings(smtp_server, retry_backoff=60, retry_max_backoff=60)
    greylist = smtp_server.faults.reply("MAIL", 451, "4.7.1 Greylisted", times=1)
    message_id = await send_later(receipt(), settings=settings)
    async with worker_running(settings):

        async def deferred() -> bool:
            return bool(
                await query("SELECT 1 FROM mailer_messages WHERE state = 'deferred'")
            )

        await wait_for(deferred)
        [(wait, error)] = await query(
            "SELECT extract(epoch FROM next_attempt_at - now()), error"
            " FROM mailer_messages"
        )
        assert 50 < wait <= 60
        assert "451" in error

        async def only_the_retry_job_is_left() -> bool:
            jobs = await query(
                "SELECT status::text, args, extract(epoch FROM scheduled_at - now())"
                " FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            )
            return len(jobs) == 1 and jobs[0][0] == "todo"

        await wait_for(only_the_retry_job_is_left)
        [(args, wait)] = await query(
            "SELECT args, extract(epoch FROM scheduled_at - now())"
            " FROM procrastinate_jobs WHERE status = 'todo'"
        )
        assert args["retry"] is True
        assert 50 < wait <= 60
        # Time passes: the retry job comes due, and the worker sends it.
        await query("UPDATE procrastinate_jobs SET scheduled_at = now()")
        [mail] = await smtp_server.outbox.wait_for(subject="Order 1", timeout=20)
    assert greylist.fired == 1
    assert mail.message["Message-ID"] == message_id
    assert await query("SELECT state, attempts, ambiguous FROM mailer_messages") == [
        ("sent", 2, False)
    ]


async def test_a_recipient_refused_with_550_fails_after_one_attempt(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    query: Any,
) -> None:
    """A 5xx is final: failed with the server's reply, never retried."""
    settings = queue_settings(smtp_server)
    smtp_server.faults.reply("RCPT", 550, "5.1.1 No such user")
    await send_later(receipt(), settings=settings)
    async with worker_running(settings):

        async def failed() -> bool:
            return bool(
                await query("SELECT 1 FROM mailer_messages WHERE state = 'failed'")
            )

        await wait_for(failed)
    [(attempts, transient, replies)] = await query(
        "SELECT attempts, transient, replies FROM mailer_messages"
    )
    assert (attempts, transient) == (1, False)
    assert replies == {"customer1@example.test": [550, "5.1.1 No such user"]}
    rcpts = [
        line
        for t in smtp_server.transcripts
        for line in t
        if line.startswith("C: RCPT")
    ]
    assert len(rcpts) == 1


async def test_a_message_left_sending_by_a_dead_worker_is_resent_as_ambiguous(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    query: Any,
) -> None:
    """'sending' means it may have gone out: resent with the same Message-ID, counted."""
    settings = queue_settings(smtp_server)
    message_id = await send_later(receipt(), settings=settings)
    await query("UPDATE mailer_messages SET state = 'sending', attempts = 1")
    async with worker_running(settings):
        [mail] = await smtp_server.outbox.wait_for(subject="Order 1", timeout=20)
    assert mail.message["Message-ID"] == message_id
    [(state, attempts, ambiguous)] = await query(
        "SELECT state, attempts, ambiguous FROM mailer_messages"
    )
    assert (state, attempts, ambiguous) == ("sent", 2, True)


async def test_a_message_another_worker_holds_waits_until_it_is_released(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    queue_database: str,
    query: Any,
) -> None:
    """Never two workers at once: a held message is not sent, its job comes back."""
    settings = queue_settings(smtp_server)
    await send_later(receipt(), settings=settings)
    [(row_id,)] = await query("SELECT id FROM mailer_messages")
    async with await psycopg.AsyncConnection.connect(
        queue_database, autocommit=True
    ) as other_worker:
        await other_worker.execute(
            "SELECT pg_advisory_lock(%s, (mod(%s, 4294967296) - 2147483648)::int)",
            [LOCK_SPACE, row_id],
        )
        async with worker_running(settings):

            async def job_came_back() -> bool:
                jobs = await query(
                    "SELECT attempts FROM procrastinate_jobs WHERE status = 'todo'"
                )
                return bool(jobs) and jobs[0][0] >= 1

            await wait_for(job_came_back)
            assert len(smtp_server.outbox) == 0
            assert await query("SELECT state FROM mailer_messages") == [("pending",)]
            await other_worker.execute("SELECT pg_advisory_unlock_all()")
            await smtp_server.outbox.wait_for(subject="Order 1", timeout=20)
    assert len(smtp_server.outbox) == 1


async def test_the_worker_refuses_a_database_without_the_schema(
    empty_database: str,
) -> None:
    """No `mailer queue init` yet: a one-line error that says to run it."""
    settings = MailerSettings(_env_file=None, queue_dsn=empty_database)
    with pytest.raises(QueueError, match="run `mailer queue init` first"):
        await run_worker(settings, concurrency=1, stop=asyncio.Event())


async def test_apply_schema_is_idempotent_and_refuses_a_newer_database(
    empty_database: str,
) -> None:
    """Init twice does nothing the second time; a newer version is not downgraded."""
    async with await psycopg.AsyncConnection.connect(
        empty_database, autocommit=True
    ) as connection:
        first = await apply_schema(connection)
        second = await apply_schema(connection)
        await connection.execute(
            "INSERT INTO mailer_schema (version, description) VALUES (99, 'future')"
        )
        with pytest.raises(QueueError, match="newer than this mailer knows"):
            await apply_schema(connection)
    assert any("procrastinate" in line for line in first)
    assert any("migration 1" in line for line in first)
    assert second == []


async def test_a_hand_edited_message_row_fails_instead_of_sending(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    query: Any,
) -> None:
    """A header injection written into the database is refused by the worker."""
    settings = queue_settings(smtp_server)
    await send_later(receipt(), settings=settings)
    [(stored,)] = await query("SELECT message FROM mailer_messages")
    stored["subject"] = "Hi\r\nBcc: victim@example.test"
    await query("UPDATE mailer_messages SET message = %s", json.dumps(stored))
    async with worker_running(settings):

        async def failed() -> bool:
            return bool(
                await query("SELECT 1 FROM mailer_messages WHERE state = 'failed'")
            )

        await wait_for(failed)
    [(error,)] = await query("SELECT error FROM mailer_messages")
    assert "cannot be read" in error
    assert "subject" in error
    assert len(smtp_server.outbox) == 0


async def test_a_retry_goes_only_to_the_recipient_that_was_deferred(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    query: Any,
) -> None:
    """452 for one of three: the retry job sends to that one alone, same Message-ID."""
    settings = queue_settings(smtp_server)
    smtp_server.faults.reply(
        "RCPT", 452, "4.2.2 Mailbox full", recipient="b@example.test", times=1
    )
    message_id = await send_later(
        Message(
            to=["a@example.test", "b@example.test", "c@example.test"],
            subject="Three",
            body="x",
        ),
        settings=settings,
    )
    async with worker_running(settings):
        first, second = await smtp_server.outbox.wait_for(count=2, timeout=20)
    assert first.envelope.rcpt_tos == ("a@example.test", "c@example.test")
    assert second.envelope.rcpt_tos == ("b@example.test",)
    assert {first.message["Message-ID"], second.message["Message-ID"]} == {message_id}
    [(state, attempts, recipients)] = await query(
        "SELECT state, attempts, recipients FROM mailer_messages"
    )
    assert (state, attempts) == ("sent", 2)
    assert set(recipients.values()) == {"accepted"}


@pytest.mark.smtp_server(tls="starttls", auth={"shop": "right"})
async def test_a_refused_login_leaves_messages_pending_and_their_job_comes_back(
    smtp_server: SMTPTestServer, queue_database: str, query: Any
) -> None:
    """535: one login tried, the messages stay pending, the job waits its backoff."""
    settings = smtp_server.settings(
        smtp_password="wrong",
        queue_dsn=queue_database,
        queue_heartbeat=1,
        retry_backoff=30,
        retry_max_backoff=30,
    )
    for n in range(3):
        await send_later(receipt(n), settings=settings)
    async with worker_running(settings, concurrency=1):

        async def job_waits() -> bool:
            jobs = await query(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
                " AND scheduled_at > now() + interval '5 seconds'"
            )
            return bool(jobs == [(3,)])

        await wait_for(job_waits)
    states = await query("SELECT state, error FROM mailer_messages ORDER BY id")
    assert [state for state, _ in states] == ["pending"] * 3
    assert any("535" in (error or "") for _, error in states)
    logins = [
        line
        for t in smtp_server.transcripts
        for line in t
        if line.startswith("C: AUTH")
    ]
    assert len(logins) <= 3  # one per job at most, never a burst per connection
    assert len(smtp_server.outbox) == 0


async def test_a_queued_attachment_arrives_byte_for_byte_without_its_file(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    tmp_path: Path,
) -> None:
    """The file is read at enqueue time: deleted afterwards, it still arrives whole."""
    from mailer import Attachment

    invoice = tmp_path / "invoice.pdf"
    payload = bytes(range(256)) * 40
    invoice.write_bytes(payload)
    settings = queue_settings(smtp_server)
    await send_later(
        Message(
            to="bob@example.test",
            subject="Invoice",
            body="Attached.",
            attachments=[Attachment.from_path(invoice)],
        ),
        settings=settings,
    )
    invoice.unlink()
    async with worker_running(settings):
        [mail] = await smtp_server.outbox.wait_for(subject="Invoice", timeout=20)
    [attached] = mail.attachments
    assert attached.filename == "invoice.pdf"
    assert attached.content == payload


async def test_enqueueing_first_in_a_new_transaction_still_rolls_back_with_it(
    queue_settings: Callable[..., MailerSettings], queue_database: str, query: Any
) -> None:
    """send_later as the first statement of a transaction: the rollback takes it too."""
    settings = queue_settings()
    async with await psycopg.AsyncConnection.connect(queue_database) as connection:
        await send_later(receipt(1), connection=connection, settings=settings)
        await connection.rollback()
        await send_later(receipt(2), connection=connection, settings=settings)
        await connection.commit()
    rows = await query("SELECT message->>'subject' FROM mailer_messages")
    assert rows == [("Order 2",)]
    assert await query("SELECT count(*) FROM procrastinate_jobs") == [(1,)]
