"""The journal as files: its lock, its state at rest, its write-ahead log, its content log."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from mailer import MessageClient, send_messages
from mailer.bulk import contentlog
from mailer.bulk.contentlog import ContentLog, log_path, read_content_log
from mailer.bulk.journal import (
    BatchIdentity,
    Journal,
    JournalState,
    check_journal_path,
)
from mailer.bulk.status import journal_status
from mailer.config.settings import MailerSettings
from mailer.exceptions import JournalError
from mailer.testing import MockTransport

IDENTITY = BatchIdentity("welcome", "recipients.csv", "digest")
ROWS = [(n, n + 1, f"user{n}@example.test", f"{n:016x}") for n in range(1, 4)]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    """A new journal of three pending messages, its run begun."""
    opened, existed = await Journal.open(tmp_path / "batch.journal", IDENTITY)
    assert not existed
    await opened.create(IDENTITY, ROWS)
    await opened.begin_run()
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.mark.parametrize("how", ["symlink", "hardlink", "relative"])
async def test_the_lock_is_on_the_file_whatever_the_path(
    journal: Journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Through a symlink, a hard link or a relative path: the same lock, refused."""
    other = tmp_path / "elsewhere" / "other-name.journal"
    other.parent.mkdir()
    if how == "symlink":
        other.symlink_to(journal.path)
    elif how == "hardlink":
        os.link(journal.path, other)
    else:
        monkeypatch.chdir(tmp_path / "elsewhere")
        other = Path("..") / journal.path.name
    with pytest.raises(JournalError, match="in use by another mailer process"):
        await Journal.open(other, IDENTITY)


async def test_no_lock_file_is_left_beside_the_journal(tmp_path: Path) -> None:
    """The lock is the file's own: no `.lock` file, and one file once closed."""
    opened, _ = await Journal.open(tmp_path / "batch.journal", IDENTITY)
    await opened.create(IDENTITY, ROWS)
    await opened.begin_run()
    assert (tmp_path / "batch.journal-content").exists()
    await opened.aclose()
    assert os.listdir(tmp_path) == ["batch.journal"]


async def test_a_journal_copied_without_its_log_is_refused(
    journal: Journal, tmp_path: Path
) -> None:
    """Mid-run (as at a crash), the main file alone: refused, naming the -wal."""
    entry = next(journal.iter_entries())
    entry.state = JournalState.SENT
    await journal.record(entry)  # in the write-ahead log only
    copy = tmp_path / "copy" / "batch.journal"
    copy.parent.mkdir()
    shutil.copy(journal.path, copy)
    with pytest.raises(
        JournalError, match=r"its write-ahead log \(batch.journal-wal\)"
    ):
        await Journal.open(copy, IDENTITY)
    status = journal_status(copy)
    assert status.log_missing
    assert any("batch.journal-wal is missing" in line for line in status.lines())


async def test_a_journal_closed_in_order_resumes_from_its_file_alone(
    tmp_path: Path,
) -> None:
    """After an orderly end the file alone is the whole journal: it resumes."""
    opened, _ = await Journal.open(tmp_path / "batch.journal", IDENTITY)
    await opened.create(IDENTITY, ROWS)
    await opened.begin_run()
    entry = next(opened.iter_entries())
    entry.state = JournalState.SENT
    await opened.record(entry)
    await opened.aclose()
    copy = tmp_path / "copy" / "batch.journal"
    copy.parent.mkdir()
    shutil.copy(opened.path, copy)
    again, existed = await Journal.open(copy, IDENTITY)
    try:
        assert existed
        assert next(again.iter_entries()).state is JournalState.SENT
    finally:
        await again.aclose()


async def test_sending_entries_are_settled_by_the_content_log(
    journal: Journal, tmp_path: Path
) -> None:
    """Left 'sending': ambiguous if its content started, plain deferred if not."""
    entries = list(journal.iter_entries())
    for entry in entries[:2]:
        entry.state, entry.attempts = JournalState.SENDING, 1
        await journal.record(entry)
    journal.mark_content(entries[0].position, 1)  # only the first one's content
    status = journal_status(journal.path)
    assert status.sending_started == 1
    assert (
        "2 sending: in flight now, or cut short by a crash; 1 had sent"
        in (status.lines()[2])
    )
    # As the next run would, after a crash of this one (same boot).
    in_doubt, cut = await journal._settle(
        read_content_log(log_path(journal.path), journal._run)
    )
    assert (in_doubt, cut) == (1, 1)
    settled = {e.email: e for e in journal.iter_entries()}
    assert settled["user1@example.test"].ambiguous
    assert settled["user1@example.test"].state is JournalState.DEFERRED
    assert not settled["user2@example.test"].ambiguous
    assert settled["user2@example.test"].state is JournalState.DEFERRED


def test_the_content_log_is_believed_only_for_its_run_and_this_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run, another boot, a torn line or no log: None (all ambiguous)."""
    path = tmp_path / "j-content"
    log = ContentLog(path, "run1", contentlog.boot_id())
    log.mark(7, 2)
    log.close(remove=False)
    assert read_content_log(path, "run1") == frozenset({(7, 2)})
    assert read_content_log(path, "run2") is None
    assert read_content_log(tmp_path / "missing", "run1") is None
    with path.open("a") as handle:
        handle.write("8 1")  # no newline: not a whole write(2) of ours
    assert read_content_log(path, "run1") is None
    fake_boot = tmp_path / "boot_id"
    fake_boot.write_text("another-boot\n")
    monkeypatch.setattr(contentlog, "BOOT_ID", fake_boot)
    log = ContentLog(path, "run1", "the-boot-before")
    log.close(remove=False)
    assert read_content_log(path, "run1") is None  # written before a reboot


def test_checking_a_journal_path_creates_nothing(tmp_path: Path) -> None:
    """The early check of --journal leaves no file behind, new or refused."""
    check_journal_path(tmp_path / "new.journal")
    with pytest.raises(JournalError, match="does not exist"):
        check_journal_path(tmp_path / "no" / "new.journal")
    assert list(tmp_path.iterdir()) == []


async def test_a_content_log_that_cannot_be_written_sends_nothing_more(
    tmp_path: Path, make_settings: Any
) -> None:
    """The note before the content fails (disk full): not sent, not lost, stopped."""
    settings = make_settings(concurrency=1)
    journal_path = tmp_path / "batch.journal"
    transport = MockTransport(lambda mail: None)

    def client(settings: MailerSettings) -> MessageClient:
        return MessageClient(settings, transport=transport)

    def disk_full(self: ContentLog, position: int, attempt: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    rows = [
        {"email": f"u{n}@example.test", "name": "U", "customer_id": "1"}
        for n in range(3)
    ]
    with (
        patch("mailer.bulk.sending.generate_message_client", side_effect=client),
        patch.object(ContentLog, "mark", disk_full),
    ):
        report = await send_messages(
            "welcome",
            rows,
            settings=settings,
            context={"plan": "pro"},
            journal=journal_path,
        )
    assert transport.outbox == []  # the content never went
    assert (report.sent, report.failed, report.pending, report.ambiguous) == (
        0,
        0,
        3,
        0,
    )
    assert "cannot write its content log: No space left on device" in str(
        report.results[0].error
    )
    status = journal_status(journal_path)
    assert status.counts[JournalState.SENT] == 0
    assert status.ambiguous == 0
    assert status.counts[JournalState.FAILED] == 0  # a resume sends them all
