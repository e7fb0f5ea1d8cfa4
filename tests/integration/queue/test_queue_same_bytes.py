"""Every attempt of a queued message sends the same bytes: retries, resends after a crash.

Found by attacking the queue: a retry (or the resend of an ambiguous message
after its worker died) carried the same Message-ID but a new Date, so the bytes,
and their DKIM signature, differed from the first attempt's. The Date is now
stored with the Message-ID at enqueue time (schema migration 3), and rows
enqueued before that migration get theirs at their first attempt.

Real parts: the suite's PostgreSQL, `mailer worker` processes (the in-process
worker only for the older-row case), and an SMTP test server in this process
whose fault plan keeps the first copy while it answers 451, so both copies can
be compared byte for byte.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from mailer import Attachment, MailerSettings, Message
from mailer.queue import send_later
from mailer.records import SentMail
from mailer.testing import END_OF_DATA, SMTPTestServer, make_dkim_key, verify_dkim

from .conftest import worker_running

MAILER = [sys.executable, "-m", "mailer"]
SENDER = "Example Shop <news@shop.example.test>"


@pytest.fixture(scope="module")
def dkim_key() -> tuple[str, str]:
    """An Ed25519 key pair: the private PEM and its DNS record."""
    return make_dkim_key("ed25519")


def invoice(n: int = 1) -> Message:
    """A multipart message: text, HTML, a file and a non-ASCII subject."""
    return Message(
        to=f"Zoë <customer{n}@example.test>",
        subject=f"Invoice {n}: ünïcode",
        body="Your invoice is attached.",
        html="<p>Your invoice is attached.</p>",
        attachments=[Attachment(b"%PDF-1.7 invoice", filename="invoice.pdf")],
    )


def worker_environment(
    dsn: str, server: SMTPTestServer, private_pem: str, *, backoff: float = 60
) -> dict[str, str]:
    """The settings of a signing `mailer worker` process (no MAILER_* inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        {
            "MAILER_QUEUE_DSN": dsn,
            "MAILER_SMTP_HOST": server.host,
            "MAILER_SMTP_PORT": str(server.port),
            "MAILER_SMTP_TLS": "none",
            "MAILER_FROM": SENDER,
            "MAILER_QUEUE_HEARTBEAT": "1",
            # By default the retry is scheduled a minute on; tests make it due.
            "MAILER_RETRY_BACKOFF": str(backoff),
            "MAILER_RETRY_MAX_BACKOFF": str(backoff),
            "MAILER_TIMEOUT": "30",
            "MAILER_DKIM_DOMAIN": "shop.example.test",
            "MAILER_DKIM_SELECTOR": "mail2026",
            "MAILER_DKIM_PRIVATE_KEY": private_pem,
        }
    )
    return env


async def start_worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start `mailer worker` as a process of its own."""
    return await asyncio.create_subprocess_exec(
        *MAILER, "worker", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def stop_worker(worker: asyncio.subprocess.Process) -> str:
    """SIGTERM, check it stopped as documented (exit 143); return its log."""
    worker.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(worker.communicate(), 60)
    assert worker.returncode == 143, stderr.decode()
    return stderr.decode()


async def wait_for(condition: Callable[[], Any], within: float = 60.0) -> None:
    """Poll until ``condition()`` (database state has no event to await)."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def make_the_retry_due(query: Any) -> None:
    """Let a second pass (a later Date, were it made anew), then make the retry due."""

    async def deferred() -> bool:
        return bool(
            await query("SELECT 1 FROM mailer_messages WHERE state = 'deferred'")
        )

    await wait_for(deferred)
    # Not synchronisation: Date has a one-second resolution, and the retry must
    # come in a later second than the first attempt for the test to mean anything.
    await asyncio.sleep(1.1)
    await query(
        "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'"
    )


def assert_same_bytes(first: SentMail, second: SentMail, record: str) -> None:
    """The two copies are the same bytes, signed once, with the recorded headers."""
    assert first.raw == second.raw
    assert b"DKIM-Signature:" in second.raw
    assert verify_dkim(second, record).domain == "shop.example.test"


async def test_a_signed_message_deferred_once_is_retried_with_the_same_bytes(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    queue_database: str,
    query: Any,
    dkim_key: tuple[str, str],
) -> None:
    """451 after the dot (message kept), retried a second later: identical copies."""
    private_pem, record = dkim_key
    first_reply = smtp_server.faults.reply(
        END_OF_DATA, 451, "4.3.0 Try again later", times=1, keep=True
    )
    message_id = await send_later(invoice(), settings=queue_settings(from_=SENDER))
    [(stored_date,)] = await query("SELECT date FROM mailer_messages")
    worker = await start_worker(
        worker_environment(queue_database, smtp_server, private_pem)
    )
    try:
        await make_the_retry_due(query)
        first, second = await smtp_server.outbox.wait_for(count=2, timeout=60)
    finally:
        await stop_worker(worker)
    assert first_reply.fired == 1
    assert_same_bytes(first, second, record)
    assert second.message["Message-ID"] == message_id
    assert second.message["Date"] == stored_date
    assert await query("SELECT state, attempts, ambiguous FROM mailer_messages") == [
        ("sent", 2, False)
    ]


async def test_a_message_whose_worker_was_killed_after_sending_is_resent_identical(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    queue_database: str,
    query: Any,
    dkim_key: tuple[str, str],
) -> None:
    """kill -9 while the reply is held; another worker resends: same bytes, ambiguous."""
    private_pem, record = dkim_key
    env = worker_environment(queue_database, smtp_server, private_pem)
    # The first copy is kept, then the reply never comes in time: the worker is
    # killed while the message is 'sending' and may have been delivered.
    smtp_server.faults.delay(END_OF_DATA, 300, times=1)
    smtp_server.faults.reply(END_OF_DATA, 451, times=1, keep=True)
    message_id = await send_later(invoice(), settings=queue_settings(from_=SENDER))
    victim = await start_worker(env)
    try:
        await smtp_server.outbox.wait_for(count=1, timeout=60)
        assert await query("SELECT state FROM mailer_messages") == [("sending",)]
    finally:
        victim.kill()
    assert await asyncio.wait_for(victim.wait(), 30) == -signal.SIGKILL
    # procrastinate's stalled-job recovery hands the job to the next worker.
    successor = await start_worker(env)
    try:
        first, second = await smtp_server.outbox.wait_for(count=2, timeout=90)
    finally:
        await stop_worker(successor)
    assert_same_bytes(first, second, record)
    assert second.message["Message-ID"] == message_id
    assert await query("SELECT state, attempts, ambiguous FROM mailer_messages") == [
        ("sent", 2, True)
    ]


async def test_a_worker_with_another_dkim_key_never_resends_a_message_in_doubt(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    queue_database: str,
    query: Any,
    dkim_key: tuple[str, str],
) -> None:
    """Killed after sending; a worker with another key leaves it pending; the first key's resends it."""
    private_pem, record = dkim_key
    other_pem, _ = make_dkim_key("ed25519")
    env = worker_environment(queue_database, smtp_server, private_pem, backoff=0.5)
    smtp_server.faults.delay(END_OF_DATA, 300, times=1)
    smtp_server.faults.reply(END_OF_DATA, 451, times=1, keep=True)
    await send_later(invoice(), settings=queue_settings(from_=SENDER))
    victim = await start_worker(env)
    try:
        await smtp_server.outbox.wait_for(count=1, timeout=60)
    finally:
        victim.kill()
    await asyncio.wait_for(victim.wait(), 30)
    other = await start_worker(
        worker_environment(queue_database, smtp_server, other_pem, backoff=0.5)
    )
    try:

        async def refused() -> bool:
            assert len(smtp_server.outbox) == 1, "resent as a different copy"
            found = await query(
                "SELECT 1 FROM mailer_messages WHERE state = 'pending'"
                " AND error LIKE '%would resend it as different bytes%'"
            )
            return bool(found)

        await wait_for(refused, within=90)
    finally:
        log = await stop_worker(other)
    assert "would resend it as different bytes" in log
    assert len(smtp_server.outbox) == 1
    [(ambiguous, error)] = await query("SELECT ambiguous, error FROM mailer_messages")
    assert ambiguous is True
    assert "DKIM key" in error
    # A worker with the first key takes the job when it comes back.
    await query(
        "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'"
    )
    successor = await start_worker(env)
    try:
        first, second = await smtp_server.outbox.wait_for(count=2, timeout=90)
    finally:
        await stop_worker(successor)
    assert_same_bytes(first, second, record)
    assert await query("SELECT state, ambiguous FROM mailer_messages") == [
        ("sent", True)
    ]


async def test_a_message_refused_with_451_may_be_resent_under_a_new_key(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    queue_database: str,
    query: Any,
    dkim_key: tuple[str, str],
) -> None:
    """Nothing can have arrived after a plain 451: a worker with another key sends it."""
    private_pem, _ = dkim_key
    other_pem, other_record = make_dkim_key("ed25519")
    smtp_server.faults.reply(END_OF_DATA, 451, times=1)
    await send_later(invoice(), settings=queue_settings(from_=SENDER))
    first = await start_worker(
        worker_environment(queue_database, smtp_server, private_pem)
    )

    async def deferred() -> bool:
        return bool(
            await query("SELECT 1 FROM mailer_messages WHERE state = 'deferred'")
        )

    try:
        await wait_for(deferred)
    finally:
        await stop_worker(first)
    await query(
        "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'"
    )
    second = await start_worker(
        worker_environment(queue_database, smtp_server, other_pem)
    )
    try:
        [mail] = await smtp_server.outbox.wait_for(count=1, timeout=60)
    finally:
        await stop_worker(second)
    assert verify_dkim(mail, other_record).domain == "shop.example.test"
    assert await query("SELECT state, attempts FROM mailer_messages") == [("sent", 2)]


async def test_a_row_enqueued_without_a_date_gets_one_at_its_first_attempt(
    smtp_server: SMTPTestServer,
    queue_settings: Callable[..., MailerSettings],
    query: Any,
) -> None:
    """A row from before migration 3 (no Date) keeps its first attempt's for the retry."""
    settings = queue_settings(smtp_server, retry_backoff=60, retry_max_backoff=60)
    smtp_server.faults.reply(END_OF_DATA, 451, times=1, keep=True)
    await send_later(invoice(), settings=settings)
    await query("UPDATE mailer_messages SET date = NULL")
    async with worker_running(settings):
        await make_the_retry_due(query)
        first, second = await smtp_server.outbox.wait_for(count=2, timeout=60)
    assert first.raw == second.raw
    [(date, attempts)] = await query("SELECT date, attempts FROM mailer_messages")
    assert (second.message["Date"], attempts) == (date, 2)
    assert parsedate_to_datetime(date).tzinfo is not None


async def test_schema_migration_3_keeps_the_rows_of_an_older_database(
    empty_database: str,
) -> None:
    """A database at version 2 gains the Date column; its messages stay, Date NULL."""
    import psycopg

    from mailer.queue import schema

    async with await psycopg.AsyncConnection.connect(
        empty_database, autocommit=True
    ) as connection:
        older = schema.MIGRATIONS
        try:
            schema.MIGRATIONS = older[:2]
            await schema.apply_schema(connection)
        finally:
            schema.MIGRATIONS = older
        await connection.execute(
            "INSERT INTO mailer_messages (email, message, message_id)"
            " VALUES ('ann@example.test', '{}', '<1@example.test>')"
        )
        done = await schema.apply_schema(connection)
        cursor = await connection.execute("SELECT email, date FROM mailer_messages")
        rows = await cursor.fetchall()
    assert done == [
        "applied mailer migration 3: each message's Date and bytes digest, so"
        " every attempt sends the same"
    ]
    assert rows == [("ann@example.test", None)]
