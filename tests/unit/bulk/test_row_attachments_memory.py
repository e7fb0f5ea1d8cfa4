"""Per-row attachment files: shared while they fit a budget, never all kept (no sockets)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from mailer import MailerSettings, RowAttachments, send_messages
from mailer.bulk import attachments as row_files
from mailer.content.attachments import Attachment
from mailer.testing import Outbox

FILE_BYTES = 100_000
ENCODED = 4 * ((FILE_BYTES + 2) // 3) + 2 * (4 * ((FILE_BYTES + 2) // 3) // 76)


@pytest.fixture
def small_cache(monkeypatch: pytest.MonkeyPatch) -> row_files.FileAttachments:
    """A cache with room for three encoded 100 kB files."""
    cache = row_files.FileAttachments(budget=3 * ENCODED + 100)
    monkeypatch.setattr(row_files, "FILES", cache)
    return cache


def _live_encoded(folder: Path) -> int:
    """Count the attachments of ``folder`` alive with their encoding in memory."""
    gc.collect()
    return sum(
        1
        for item in gc.get_objects()
        if isinstance(item, Attachment)
        and item.path is not None
        and item.path.parent == folder
        and item._part is not None
    )


async def test_each_rows_own_files_are_not_all_kept_in_memory(
    tmp_path: Path,
    mail_outbox: Outbox,
    small_cache: row_files.FileAttachments,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 rows with their own 100 kB file: at most the budget stays encoded."""
    folder = tmp_path / "files"
    folder.mkdir()
    for n in range(40):
        (folder / f"inv{n}.pdf").write_bytes(bytes([n]) * FILE_BYTES)
    templates = tmp_path / "templates" / "inv"
    templates.mkdir(parents=True)
    (templates / "subject.txt").write_text("Invoice\n")
    (templates / "body.txt").write_text("Hello {{ name }}\n")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(tmp_path / "templates"))
    rows = [
        {"email": f"r{n}@example.test", "name": f"R{n}", "invoice": f"inv{n}.pdf"}
        for n in range(40)
    ]
    files = RowAttachments(column="invoice", directory=folder)
    report = await send_messages(
        "inv",
        rows,
        settings=MailerSettings(_env_file=None, from_="s@example.test"),
        attachments=files,
    )
    assert report.sent == 40
    assert [m.attachments[0].content[:1] for m in mail_outbox] == [
        bytes([n]) for n in range(40)
    ]
    mail_outbox.clear()
    assert small_cache.kept_bytes <= small_cache.budget
    assert _live_encoded(folder) <= 3


def test_a_file_named_by_several_rows_is_one_object_while_kept(
    tmp_path: Path, small_cache: row_files.FileAttachments
) -> None:
    """Rows naming the same file share one Attachment (read and encoded once)."""
    (tmp_path / "terms.pdf").write_bytes(b"t" * FILE_BYTES)
    (tmp_path / "other.pdf").write_bytes(b"o" * FILE_BYTES)
    first = row_files.file_attachment(tmp_path / "terms.pdf")
    row_files.file_attachment(tmp_path / "other.pdf")
    assert row_files.file_attachment(tmp_path / "terms.pdf") is first


def test_the_least_recently_used_file_goes_first(
    tmp_path: Path, small_cache: row_files.FileAttachments
) -> None:
    """Past the budget the oldest unused file is dropped, then read afresh."""
    for name in "abcd":
        (tmp_path / name).write_bytes(name.encode() * FILE_BYTES)
    a = row_files.file_attachment(tmp_path / "a")
    b = row_files.file_attachment(tmp_path / "b")
    row_files.file_attachment(tmp_path / "c")
    assert row_files.file_attachment(tmp_path / "a") is a  # a is now the newest
    row_files.file_attachment(tmp_path / "d")  # over budget: b goes
    assert row_files.file_attachment(tmp_path / "a") is a
    assert row_files.file_attachment(tmp_path / "b") is not b
    assert small_cache.kept_bytes <= small_cache.budget
