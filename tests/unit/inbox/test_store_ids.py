"""A message's id always comes from its file name, never from its index file.

Found by attacking the inbox folder: an index file (``.index/ID.json``) whose
"id" was ``../outside/victim`` made "Delete all" (and the --max-messages cap,
at start-up) unlink ``../outside/victim.eml`` and ``.json``, outside the
inbox folder, and ``/api/v1/messages/latest/raw`` read that file.
"""

from __future__ import annotations

import json
from pathlib import Path

from mailer.inbox.store import INDEX_FOLDER, MailStore

EML = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


def plant(folder: Path, mail_id: str, claimed_id: str) -> None:
    """An .eml and an index file that claims another id."""
    (folder / INDEX_FOLDER).mkdir(parents=True, exist_ok=True)
    (folder / f"{mail_id}.eml").write_bytes(EML)
    record = {
        "id": claimed_id,
        "received_at": 1.0,
        "size": len(EML),
        "mail_from": "a@example.test",
        "rcpt_tos": ["b@example.test"],
        "subject": "planted",
    }
    (folder / INDEX_FOLDER / f"{mail_id}.json").write_text(json.dumps(record))


def victims(tmp_path: Path) -> list[Path]:
    """Files outside the inbox folder that a planted id points at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    files = [outside / "victim.eml", outside / "victim.json"]
    for path in files:
        path.write_text("precious")
    return files


async def test_an_index_file_cannot_point_outside_the_folder(tmp_path: Path) -> None:
    """The planted id is ignored (re-indexed from the .eml); delete-all stays inside."""
    folder = tmp_path / "box"
    files = victims(tmp_path)
    plant(folder, "20260101-000000-000001", "../outside/victim")
    store = MailStore(folder)
    assert store.load() == 1
    [stored] = store.search()[0]
    assert stored.id == "20260101-000000-000001"
    assert stored.subject == "hi"  # read from the .eml, not the planted record
    assert await store.raw(stored.id) == EML
    await store.clear()
    assert all(path.read_text() == "precious" for path in files)
    assert not (folder / "20260101-000000-000001.eml").exists()


def test_the_cap_at_start_up_deletes_only_inside(tmp_path: Path) -> None:
    """--max-messages 1 with a planted oldest record: nothing outside is deleted."""
    folder = tmp_path / "box"
    files = victims(tmp_path)
    plant(folder, "20260101-000000-000001", "../outside/victim")
    plant(folder, "20260101-000000-000002", "20260101-000000-000002")
    store = MailStore(folder, max_messages=1)
    store.load()
    assert all(path.read_text() == "precious" for path in files)
    [kept] = store.search()[0]
    assert kept.id.startswith("20260101-000000-00000")
