"""The inbox's message store, its summaries and search, and atomic files (no sockets)."""

from __future__ import annotations

import errno
import json
import os
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailer.content.message import Envelope
from mailer.inbox import files
from mailer.inbox.files import write_atomically
from mailer.inbox.store import Change, MailStore
from mailer.inbox.summary import Query
from mailer.records import SentMail, SessionInfo

SESSION = SessionInfo(
    number=3,
    peer=("127.0.0.1", 5000),
    helo="app",
    tls="starttls",
    tls_version="TLSv1.3",
    auth_username="svc",
)


def sent(
    subject: str,
    text: str = "hello",
    *,
    to: str = "ann@example.test",
    bcc: tuple[str, ...] = (),
    attachment: bool = False,
) -> SentMail:
    message = EmailMessage()
    message["From"] = "Shop <shop@example.test>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    if attachment:
        message.add_attachment(
            b"%PDF", maintype="application", subtype="pdf", filename="bill.pdf"
        )
    return SentMail(
        envelope=Envelope(mail_from="shop@example.test", rcpt_tos=(to, *bcc)),
        raw=message.as_bytes(),
        session=SESSION,
    )


def files_in(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern)))


async def test_a_message_is_saved_indexed_and_reloaded(tmp_path: Path) -> None:
    """add() writes the .eml and its record; a new store on the folder has both."""
    store = MailStore(tmp_path)
    store.load()
    stored = await store.add(sent("Hi", bcc=("audit@example.test",)))
    assert store.path(stored.id).read_bytes() == sent("Hi").raw
    again = MailStore(tmp_path)
    assert again.load() == 1
    reloaded = again.get(stored.id)
    assert reloaded == stored
    assert reloaded is not None
    assert reloaded.bcc == ("audit@example.test",)
    assert reloaded.session == SESSION
    mail = await again.sent_mail(stored.id)
    assert mail.envelope.rcpt_tos == ("ann@example.test", "audit@example.test")
    assert mail.session == SESSION


async def test_ids_keep_increasing_after_a_restart(tmp_path: Path) -> None:
    """A restarted store never reuses an id (which would overwrite a message)."""
    first = MailStore(tmp_path)
    first.load()
    a = await first.add(sent("a"))
    second = MailStore(tmp_path)
    second.load()
    b = await second.add(sent("b"))
    assert b.id != a.id
    assert b.id.rsplit("-", 1)[1] > a.id.rsplit("-", 1)[1]


async def test_the_oldest_are_dropped_past_max_messages(tmp_path: Path) -> None:
    """With max_messages=2 the third message deletes the first, files and all."""
    store = MailStore(tmp_path, max_messages=2)
    store.load()
    changes: list[Change] = []
    store.subscribe(changes.append)
    first = await store.add(sent("1"))
    await store.add(sent("2"))
    await store.add(sent("3"))
    assert [m.subject for m in store.search()[0]] == ["3", "2"]
    assert not store.path(first.id).exists()
    assert [c.kind for c in changes] == ["added", "added", "added", "deleted"]
    assert changes[-1].mail == first


async def test_a_lower_cap_prunes_at_load(tmp_path: Path) -> None:
    """Loading a folder with more messages than the cap keeps the newest."""
    store = MailStore(tmp_path)
    store.load()
    for n in range(4):
        await store.add(sent(f"m{n}"))
    small = MailStore(tmp_path, max_messages=2)
    assert small.load() == 2
    assert [m.subject for m in small.search()[0]] == ["m3", "m2"]
    assert files_in(tmp_path, "*.eml") == 2


def test_an_eml_without_a_record_is_indexed_and_a_record_without_eml_dropped(
    tmp_path: Path,
) -> None:
    """A hand-copied .eml is indexed (envelope from headers); an orphan record goes."""
    (tmp_path / "copied.eml").write_bytes(sent("Copied in", to="bob@example.test").raw)
    (tmp_path / ".index").mkdir()
    (tmp_path / ".index" / "gone.json").write_text("{}")
    (tmp_path / ".half.eml.tmp").write_bytes(b"partial")
    store = MailStore(tmp_path)
    assert store.load() == 1
    stored = store.get("copied")
    assert stored is not None
    assert stored.subject == "Copied in"
    assert stored.rcpt_tos == ("bob@example.test",)
    assert stored.session is None
    assert not (tmp_path / ".index" / "gone.json").exists()
    assert not (tmp_path / ".half.eml.tmp").exists()
    assert (tmp_path / ".index" / "copied.json").exists()


def test_a_damaged_record_is_rebuilt_from_its_eml(tmp_path: Path) -> None:
    """A record that is not JSON does not stop the load: the .eml is read again."""
    (tmp_path / "m1.eml").write_bytes(sent("Still here").raw)
    (tmp_path / ".index").mkdir()
    (tmp_path / ".index" / "m1.json").write_text("{not json")
    store = MailStore(tmp_path)
    assert store.load() == 1
    assert store.get("m1") is not None


async def test_flags_are_saved_and_announced(tmp_path: Path) -> None:
    """update() marks read / allows remote images, persists it, and says so once."""
    store = MailStore(tmp_path)
    store.load()
    stored = await store.add(sent("Flags"))
    changes: list[Change] = []
    store.subscribe(changes.append)
    assert store.unread == 1
    await store.update(stored.id, read=True, remote_images=True)
    await store.update(stored.id, read=True)  # no change, no event
    assert store.unread == 0
    assert [c.kind for c in changes] == ["updated"]
    record = json.loads((tmp_path / ".index" / f"{stored.id}.json").read_text())
    assert (record["read"], record["remote_images"]) == (True, True)


async def test_delete_and_clear_remove_files(tmp_path: Path) -> None:
    """delete() removes one message's files; clear() every message's."""
    store = MailStore(tmp_path)
    store.load()
    a = await store.add(sent("a"))
    await store.add(sent("b"))
    assert await store.delete(a.id) is True
    assert await store.delete(a.id) is False
    assert not store.path(a.id).exists()
    assert await store.clear() == 1
    assert files_in(tmp_path, "*.eml") == 0
    assert files_in(tmp_path / ".index", "*.json") == 0


async def test_search_matches_words_fields_and_flags(tmp_path: Path) -> None:
    """Words must all match; from:/to:/subject:, is:unread and has:attachment narrow."""
    store = MailStore(tmp_path)
    store.load()
    await store.add(sent("Invoice 42", "Total due: 12 EUR", attachment=True))
    await store.add(
        sent("Welcome", "Hello Bob", to="bob@example.test", bcc=("x@example.test",))
    )
    read = await store.add(sent("Receipt", "pineapple"))
    await store.update(read.id, read=True)

    def subjects(query: str) -> list[str]:
        return [m.subject for m in store.search(query)[0]]

    assert subjects("due eur") == ["Invoice 42"]
    assert subjects("due bob") == []
    assert subjects("PINEAPPLE") == ["Receipt"]
    assert subjects("to:x@example.test") == ["Welcome"]
    assert subjects("from:shop subject:welcome") == ["Welcome"]
    assert subjects("is:unread") == ["Welcome", "Invoice 42"]
    assert subjects("is:read") == ["Receipt"]
    assert subjects("has:attachment") == ["Invoice 42"]
    assert subjects('"total due"') == ["Invoice 42"]
    assert subjects("bill.pdf") == ["Invoice 42"]  # attachment names are searched
    page, total = store.search("", offset=1, limit=1)
    assert ([m.subject for m in page], total) == (["Welcome"], 3)


def test_an_unbalanced_quote_is_searched_literally() -> None:
    """A stray quote in the search box is not an error."""
    assert Query.parse('say "hi').words == ("say", '"hi')


def test_an_html_only_message_is_searchable_by_its_visible_text(tmp_path: Path) -> None:
    """Without a text part, the HTML's visible text (not its markup or script) is indexed."""
    from mailer.inbox.summary import summarise

    message = EmailMessage()
    message["Subject"] = "html only"
    message.set_content(
        "<p>Visible <b>words</b></p><script>hidden()</script>", subtype="html"
    )
    stored = summarise(
        SentMail(envelope=Envelope(mail_from="", rcpt_tos=()), raw=message.as_bytes()),
        id="x",
    )
    assert "visible words" in stored.search_text
    assert "hidden" not in stored.search_text
    assert stored.snippet == "Visible words"


def test_a_failed_write_leaves_neither_the_file_nor_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills half-way through: the error is raised, no file is left."""
    target = tmp_path / "m.eml"
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomically(target, b"x" * 10_000)
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomically(target, b"new content")
    assert target.read_bytes() == b"old"  # the previous version is intact


async def test_a_store_that_cannot_save_raises_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    """add() into a folder that vanished raises OSError and indexes nothing."""
    folder = tmp_path / "box"
    store = MailStore(folder)
    store.load()
    for path in (folder / ".index").iterdir():
        path.unlink()
    (folder / ".index").rmdir()
    folder.rmdir()
    with pytest.raises(FileNotFoundError):
        await store.add(sent("lost"))
    assert len(store) == 0


def test_max_messages_must_be_positive(tmp_path: Path) -> None:
    """A cap of 0 is refused at once."""
    with pytest.raises(ValueError, match="max_messages"):
        MailStore(tmp_path, max_messages=0)
