"""send_messages(journal=...): what is recorded, when, and what a resume sends again."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from mailer import (
    ConnectError,
    MessageClient,
    RecipientsRefusedError,
    Reply,
    SendStatus,
    send_messages,
)
from mailer.bulk.journal import BatchIdentity, Journal
from mailer.bulk.status import journal_status
from mailer.config.settings import MailerSettings
from mailer.delivery.retry import RetryPolicy
from mailer.exceptions import JournalError
from mailer.templates.sets import _load_cached
from mailer.testing import SentMail
from mailer.transports import MockTransport
from mailer.transports.base import Transport

ROWS = [
    {"email": f"{name}@example.test", "name": name.title(), "customer_id": f"C-{n}"}
    for n, name in enumerate(["ann", "bob", "cy", "dee"], 1)
]
NO_USER = Reply(550, "5.1.1 no such user")
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def state(path: Path) -> dict[str, tuple[str, str | None, int, int]]:
    """Each message's (state, message_id, attempts, ambiguous), by address."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT email, state, message_id, attempts, ambiguous FROM messages"
        ).fetchall()
    return {email: (s, mid, attempts, amb) for email, s, mid, attempts, amb in rows}


@pytest.fixture
def transport_for() -> Iterator[Callable[[Transport], None]]:
    """Route send_messages' client to a given transport."""
    current: list[Transport] = []

    def client(settings: MailerSettings) -> MessageClient:
        made = MessageClient(settings, transport=current[-1])
        made.retry_policy = RetryPolicy(
            settings.max_attempts, 0.001, 0.001, settings.send_deadline
        )
        return made

    with patch("mailer.bulk.sending.generate_message_client", side_effect=client):
        yield current.append


async def send(
    settings: MailerSettings,
    journal: Path,
    rows: list[dict[str, Any]] = ROWS,
    **options: Any,
) -> Any:
    return await send_messages(
        "welcome",
        rows,
        settings=settings,
        context={"plan": "pro"},
        journal=journal,
        **options,
    )


async def test_every_message_is_recorded_sent_with_its_message_id(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """A fresh journal: one row per message, each sent with the Message-ID used."""
    journal = tmp_path / "batch.journal"
    modes: list[str] = []

    def look(mail: SentMail) -> None:
        with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
            modes.append(db.execute("PRAGMA journal_mode").fetchone()[0])

    transport = MockTransport(look)
    transport_for(transport)
    report = await send(settings, journal)
    assert (report.sent, report.failed, report.resumed) == (4, 0, None)
    recorded = state(journal)
    sent_ids = {m.to[0]: m.message["Message-ID"] for m in transport.outbox}
    assert recorded == {email: ("sent", sent_ids[email], 1, 0) for email in sent_ids}
    assert set(modes) == {"wal"}  # while the batch runs
    with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        # At rest, one file (no -wal, no -shm, even once a reader opened it).
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert os.listdir(tmp_path) == ["batch.journal"]


async def test_sending_is_committed_before_the_transaction_and_sent_after(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """While the server has the message, the journal already says 'sending' with its ID."""
    journal = tmp_path / "batch.journal"
    seen: list[tuple[str, str | None]] = []
    delivered: list[str] = []

    def look(mail: SentMail) -> None:
        recorded = state(journal)
        row = recorded[mail.to[0]]
        seen.append((row[0], row[1]))
        assert row[1] == mail.message["Message-ID"]
        # Each earlier message was committed 'sent' right after its own 250.
        assert [recorded[email][0] for email in delivered] == ["sent"] * len(delivered)
        delivered.append(mail.to[0])

    transport_for(MockTransport(look))
    await send(settings.model_copy(update={"concurrency": 1}), journal)
    assert [s for s, _ in seen] == ["sending"] * 4
    assert {s for s, _, _, _ in state(journal).values()} == {"sent"}


async def test_a_second_run_sends_nothing_already_sent(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """Re-running the same batch with its journal: 0 sent again, every message reported."""
    journal = tmp_path / "batch.journal"
    first = MockTransport(lambda mail: None)
    transport_for(first)
    await send(settings, journal)
    again = MockTransport(lambda mail: None)
    transport_for(again)
    report = await send(settings, journal)
    assert again.outbox == []
    assert report.resumed is not None
    assert report.resumed.already_sent == 4
    assert report.resumed.to_send == 0
    assert [r.status for r in report.results] == [SendStatus.SENT] * 4
    assert [r.message_id for r in report.results] == [
        m.message["Message-ID"] for m in first.outbox
    ]


async def test_a_resume_retries_transient_failures_not_550s(
    make_settings: Callable[..., MailerSettings],
    tmp_path: Path,
    transport_for: Callable[[Transport], None],
) -> None:
    """bob failed on 4xx (retried by the resume, same Message-ID); cy's 550 is final."""
    settings = make_settings(max_attempts=2)
    journal = tmp_path / "batch.journal"

    def first_run(mail: SentMail) -> None:
        if mail.to[0] == "bob@example.test":
            raise ConnectError(
                "smtp.example.test:25 closed the connection", transient=True
            )
        if mail.to[0] == "cy@example.test":
            raise RecipientsRefusedError(
                "550", refused={"cy@example.test": NO_USER}, reply=NO_USER
            )

    first = MockTransport(first_run)
    transport_for(first)
    report = await send(settings, journal)
    assert (report.sent, report.failed) == (2, 2)
    bob_id = state(journal)["bob@example.test"][1]
    assert state(journal)["bob@example.test"][0] == "failed"

    second = MockTransport(lambda mail: None)
    transport_for(second)
    report = await send(settings, journal)
    assert [m.to[0] for m in second.outbox] == ["bob@example.test"]
    assert second.outbox[0].message["Message-ID"] == bob_id
    assert report.resumed is not None
    assert (report.resumed.already_sent, report.resumed.refused) == (2, 1)
    assert report.resumed.failed_transient == 1
    by_to = {r.to[0]: r for r in report.results}
    assert by_to["bob@example.test"].status is SendStatus.SENT
    assert by_to["bob@example.test"].attempts == 3  # 2 in the first run, 1 now
    assert by_to["cy@example.test"].status is SendStatus.FAILED
    assert by_to["cy@example.test"].reply == NO_USER


async def test_a_message_caught_sending_is_resent_with_its_id_and_counted_ambiguous(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """A crash during ann's attempt: resent with the same Message-ID, ambiguous."""
    journal = tmp_path / "batch.journal"
    transport_for(MockTransport(lambda mail: None))
    await send(settings, journal)
    with sqlite3.connect(journal) as db:
        db.execute(
            # As a crash during ann's first attempt leaves it, in a journal
            # written before digests were recorded (so another Message-ID
            # than the one sent is no changed content).
            "UPDATE messages SET state = 'sending', message_id = '<crash@example.test>',"
            " recipients = '{}', digest = NULL WHERE email = 'ann@example.test'"
        )
    again = MockTransport(lambda mail: None)
    transport_for(again)
    report = await send(settings, journal)
    [resent] = again.outbox
    assert resent.to == ("ann@example.test",)
    assert resent.message["Message-ID"] == "<crash@example.test>"
    assert report.resumed is not None
    assert report.resumed.in_doubt == 1
    assert report.ambiguous == 1
    ann = report.results[0]
    assert (ann.status, ann.ambiguous) == (SendStatus.SENT, True)
    assert ann.to_report()["ambiguous"] is True
    assert "1 ambiguous" in report.summary()
    assert state(journal)["ann@example.test"][3] == 1


async def test_a_journal_of_another_template_or_file_is_refused(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """Resuming with other recipients or another template: a clear error, nothing sent."""
    journal = tmp_path / "batch.journal"
    transport = MockTransport(lambda mail: None)
    transport_for(transport)
    await send(settings, journal)
    with pytest.raises(JournalError, match="journal of another batch: "):
        await send(settings, journal, rows=ROWS[:3])
    edited = [dict(ROWS[0], name="Annie"), *ROWS[1:]]
    with pytest.raises(JournalError, match="changed since the journal was started"):
        await send(settings, journal, rows=edited)
    with pytest.raises(JournalError, match="template 'welcome', not 'other'"):
        await Journal.open(journal, BatchIdentity("other", "x", "y"))
    assert len(transport.outbox) == 4


async def test_a_journal_in_use_by_another_run_is_refused(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """Two runs on one journal would send twice: the second is refused."""
    journal = tmp_path / "batch.journal"
    transport_for(MockTransport(lambda mail: None))
    holder, _ = await Journal.open(journal, BatchIdentity("welcome", "x", "y"))
    try:
        with pytest.raises(JournalError, match="in use by another mailer process"):
            await send(settings, journal)
    finally:
        await holder.aclose()


async def test_a_file_that_is_not_a_journal_is_refused(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """Pointing --journal at some other file: an error, the file left alone."""
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n" * 100)
    transport_for(MockTransport(lambda mail: None))
    with pytest.raises(JournalError, match="not a mailer journal"):
        await send(settings, other)
    assert other.read_text() == "my notes\n" * 100


async def test_a_stopped_run_leaves_pending_and_deferred_for_the_resume(
    make_settings: Callable[..., MailerSettings],
    tmp_path: Path,
    transport_for: Callable[[Transport], None],
) -> None:
    """Stop while bob waits to retry: bob 'deferred' with a time, the rest resumable."""
    settings = make_settings(concurrency=1, shutdown_grace=1)
    journal = tmp_path / "batch.journal"
    stop = asyncio.Event()

    def bob_fails_then_stop(mail: SentMail) -> None:
        if mail.to[0] == "bob@example.test":
            stop.set()
            raise ConnectError("lost", transient=True)

    transport_for(MockTransport(bob_fails_then_stop))
    # The test backoff is milliseconds; make bob's wait long.
    with patch.object(RetryPolicy, "delay", return_value=30.0):
        report = await send(settings, journal, stop=stop)
    assert [r.status for r in report.results] == [
        SendStatus.SENT,
        SendStatus.PENDING,
        SendStatus.PENDING,
        SendStatus.PENDING,
    ]
    status = journal_status(journal)
    assert {s.value: n for s, n in status.counts.items() if n} == {
        "sent": 1,
        "deferred": 1,
        "pending": 2,
    }
    with sqlite3.connect(journal) as db:
        [(next_at,)] = db.execute(
            "SELECT next_attempt_at FROM messages WHERE state = 'deferred'"
        ).fetchall()
    assert next_at is not None

    resumed = MockTransport(lambda mail: None)
    transport_for(resumed)
    report = await send(settings, journal)
    assert sorted(m.to[0] for m in resumed.outbox) == [
        "bob@example.test",
        "cy@example.test",
        "dee@example.test",
    ]
    assert report.sent == 4


async def test_status_lists_counts_and_failures(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """journal_status: counts per state, the failures with their reply."""

    def refuse_cy(mail: SentMail) -> None:
        if mail.to[0] == "cy@example.test":
            raise RecipientsRefusedError(
                "smtp.example.test:25 refused every recipient: 550 5.1.1 no such user",
                refused={"cy@example.test": NO_USER},
                reply=NO_USER,
            )

    transport_for(MockTransport(refuse_cy))
    journal = tmp_path / "batch.journal"
    await send(settings, journal)
    status = journal_status(journal)
    assert not status.is_complete
    lines = status.lines()
    assert lines[1] == "0 pending, 0 sending, 3 sent, 1 failed, 0 deferred"
    assert lines[-1] == (
        "failed line 3 cy@example.test: smtp.example.test:25 refused every "
        "recipient: 550 5.1.1 no such user (final; 1 attempt(s))"
    )
    with pytest.raises(JournalError, match="no such journal file"):
        journal_status(tmp_path / "missing.journal")


async def test_a_journal_without_the_date_column_resumes_and_gains_it(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """A journal written before the Date was recorded still resumes (the column is added)."""
    journal = tmp_path / "batch.journal"
    transport_for(MockTransport(lambda mail: None))
    await send(settings, journal)
    with sqlite3.connect(journal) as db:
        db.execute("ALTER TABLE messages DROP COLUMN date")
    report = await send(settings, journal)
    assert report.resumed is not None
    assert report.resumed.already_sent == len(ROWS)
    with sqlite3.connect(journal) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    assert "date" in columns


async def test_the_date_is_recorded_with_the_message_id(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """'sending' is committed with the Date the message carries, for a byte-identical resume."""
    journal = tmp_path / "batch.journal"
    sent = MockTransport(lambda mail: None)
    transport_for(sent)
    await send(settings, journal)
    with sqlite3.connect(journal) as db:
        recorded = dict(db.execute("SELECT message_id, date FROM messages"))
    assert {mail.message_id: mail.header("Date") for mail in sent.outbox} == recorded


def crash_during(journal: Path, email: str) -> None:
    """Leave ``email``'s message as a crash after its content leaves it: in doubt."""
    with sqlite3.connect(journal) as db:
        db.execute(
            "UPDATE messages SET state = 'sending', recipients = '{}' WHERE email = ?",
            (email,),
        )


@pytest.fixture
def own_templates(tmp_path: Path) -> Iterator[Path]:
    """A copy of the example templates that a test may edit."""
    copy = tmp_path / "templates"
    shutil.copytree(EXAMPLES / "templates", copy)
    yield copy
    _load_cached.cache_clear()


def edit(path: Path, text: str) -> None:
    """Rewrite a template file, as between two runs (each compiles its sets afresh)."""
    path.write_text(text, encoding="utf-8")
    _load_cached.cache_clear()  # this process compiled the set once already


async def test_a_message_resent_after_a_crash_has_the_same_bytes(
    settings: MailerSettings, tmp_path: Path, transport_for: Callable[[Transport], None]
) -> None:
    """Resent in doubt: the very bytes of the first attempt (Message-ID, Date, body)."""
    journal = tmp_path / "batch.journal"
    first = MockTransport(lambda mail: None)
    transport_for(first)
    await send(settings, journal)
    crash_during(journal, "ann@example.test")
    again = MockTransport(lambda mail: None)
    transport_for(again)
    await send(settings, journal)
    [resent] = again.outbox
    [original] = [m for m in first.outbox if m.to == ("ann@example.test",)]
    assert resent.raw == original.raw


async def test_a_message_in_doubt_that_now_builds_differently_is_not_sent(
    make_settings: Any,
    own_templates: Path,
    tmp_path: Path,
    transport_for: Callable[[Transport], None],
) -> None:
    """Template edited between crash and resume: no differing copy goes; put back, it does."""
    settings = make_settings(templates_dir=own_templates)
    journal = tmp_path / "batch.journal"
    first = MockTransport(lambda mail: None)
    transport_for(first)
    await send(settings, journal)
    [original] = [m for m in first.outbox if m.to == ("ann@example.test",)]
    crash_during(journal, "ann@example.test")
    subject = own_templates / "welcome" / "subject.txt"
    kept = subject.read_text(encoding="utf-8")
    edit(subject, "Edited after the crash, {{ name }}")

    edited = MockTransport(lambda mail: None)
    transport_for(edited)
    report = await send(settings, journal)
    assert edited.outbox == []  # no second, different copy of ann's message
    [ann] = [r for r in report.results if r.to == ("ann@example.test",)]
    assert ann.status is SendStatus.PENDING
    assert ann.ambiguous
    assert "line 1 (ann@example.test) may have been delivered" in str(ann.error)
    assert "put them back as they were" in str(ann.error)
    assert state(journal)["ann@example.test"][0] == "deferred"  # still to resume

    edit(subject, kept)
    restored = MockTransport(lambda mail: None)
    transport_for(restored)
    report = await send(settings, journal)
    [resent] = restored.outbox
    assert resent.raw == original.raw
    assert report.sent == len(ROWS)


async def test_a_message_no_copy_of_which_left_is_sent_as_it_builds_now(
    make_settings: Any,
    own_templates: Path,
    tmp_path: Path,
    transport_for: Callable[[Transport], None],
) -> None:
    """Deferred by a 4xx before any copy left: a changed template is no duplicate; sent."""
    settings = make_settings(templates_dir=own_templates, max_attempts=1)
    journal = tmp_path / "batch.journal"

    def busy(mail: SentMail) -> None:
        raise ConnectError("smtp.example.test:25 closed the connection", transient=True)

    transport_for(MockTransport(busy))
    report = await send(settings, journal)
    assert report.sent == 0
    subject = own_templates / "welcome" / "subject.txt"
    edit(subject, "Fixed after the first run, {{ name }}")
    again = MockTransport(lambda mail: None)
    transport_for(again)
    report = await send(settings, journal)
    assert report.sent == len(ROWS)
    assert {m.subject for m in again.outbox} == {
        f"Fixed after the first run, {row['name']}" for row in ROWS
    }
