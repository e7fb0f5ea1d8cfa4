"""Keep the inbox's messages on disk: one ``.eml`` each, plus what the page needs.

Layout of the folder::

    DIR/20260101-120000-000001.eml         the message, byte for byte
    DIR/.index/20260101-120000-000001.json its StoredMail (envelope, session, flags)

Both are written atomically. A restart reloads the index; an ``.eml`` without
its JSON (copied in by hand, or written by an older version) is read and
indexed; a JSON without its ``.eml`` is dropped. At most ``max_messages`` are
kept: the oldest go first. Every change is announced to the subscribers.

The index is changed only on the event loop's thread; file work runs in a
worker thread so a slow disk never stalls SMTP or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mailer.content.message import Envelope
from mailer.inbox.files import remove_leftovers, write_atomically
from mailer.inbox.limits import LOG
from mailer.inbox.summary import Query, StoredMail, summarise
from mailer.records import SentMail

DEFAULT_MAX_MESSAGES = 1000
INDEX_FOLDER = ".index"
# What a message id may look like: it names files and appears in URLs.
MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_OWN_NAME = re.compile(r"\d{8}-\d{6}-(\d{6,})")

ChangeKind = Literal["added", "updated", "deleted", "cleared"]


@dataclass(frozen=True, slots=True)
class Change:
    """What changed in the store: a message added, updated or deleted, or all."""

    kind: ChangeKind
    mail: StoredMail | None = None


Subscriber = Callable[[Change], None]


class MailStore:
    """The messages of one inbox folder, newest last.

    Args:
        directory: The folder (created if missing).
        max_messages: How many to keep; the oldest are deleted past it
            (``None``: no limit).
    """

    def __init__(
        self, directory: Path, *, max_messages: int | None = DEFAULT_MAX_MESSAGES
    ) -> None:
        if max_messages is not None and max_messages < 1:
            raise ValueError("max_messages: keep at least 1 message")
        self.directory = directory
        self.max_messages = max_messages
        self._mails: dict[str, StoredMail] = {}
        self._subscribers: list[Subscriber] = []
        self._sequence = 0

    # -- reading ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._mails)

    @property
    def unread(self) -> int:
        """Return how many messages were never opened."""
        return sum(1 for mail in self._mails.values() if not mail.read)

    def get(self, mail_id: str) -> StoredMail | None:
        """Return one message's record, or None (also for a malformed id)."""
        return self._mails.get(mail_id)

    def latest(self) -> StoredMail | None:
        """Return the newest message, if any."""
        return next(reversed(self._mails.values()), None)

    def search(
        self, query: str | Query = "", *, offset: int = 0, limit: int | None = 50
    ) -> tuple[list[StoredMail], int]:
        """Return a page of matching messages, newest first, and how many match."""
        if isinstance(query, str):
            query = Query.parse(query)
        newest: Iterable[StoredMail] = reversed(self._mails.values())
        if query.is_empty:
            found = list(newest)
        else:
            found = [m for m in newest if query.matches(m)]
        end = None if limit is None else offset + limit
        return found[offset:end], len(found)

    def path(self, mail_id: str) -> Path:
        """Return the ``.eml`` file of a message."""
        return self.directory / f"{mail_id}.eml"

    async def raw(self, mail_id: str) -> bytes:
        """Return a message's bytes.

        Raises:
            KeyError: No such message.
            OSError: Its file cannot be read.
        """
        if mail_id not in self._mails:
            raise KeyError(mail_id)
        return await asyncio.to_thread(self.path(mail_id).read_bytes)

    async def sent_mail(self, mail_id: str) -> SentMail:
        """Return a message as a SentMail (envelope, bytes and session).

        Raises:
            KeyError: No such message.
            OSError: Its file cannot be read.
        """
        stored = self._mails[mail_id]
        raw = await self.raw(mail_id)
        return SentMail(
            envelope=Envelope(mail_from=stored.mail_from, rcpt_tos=stored.rcpt_tos),
            raw=raw,
            session=stored.session,
        )

    # -- changing -------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` with every change; returns what unsubscribes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def load(self) -> int:
        """Read the folder (blocking: call it before serving, or in a thread).

        Returns:
            How many messages were loaded.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        index = self.directory / INDEX_FOLDER
        index.mkdir(exist_ok=True)
        remove_leftovers(self.directory)
        remove_leftovers(index)
        found: list[StoredMail] = []
        emls = {p.stem: p for p in self.directory.glob("*.eml") if _is_id(p.stem)}
        for sidecar in index.glob("*.json"):
            if sidecar.stem not in emls:
                with contextlib.suppress(OSError):
                    sidecar.unlink()
        for mail_id, eml in emls.items():
            stored = _read_sidecar(index / f"{mail_id}.json")
            if stored is not None and stored.id != mail_id:
                # The id names files to read and delete: one taken from a
                # sidecar's contents ("../x") would reach outside the folder.
                LOG.warning("inbox: ignoring the index file of %s (wrong id)", mail_id)
                stored = None
            if stored is None:
                stored = _index_file(eml, mail_id)
            if stored is not None:
                found.append(stored)
        found.sort(key=lambda m: (m.received_at, m.id))
        self._mails = {m.id: m for m in found}
        self._sequence = max((_sequence_of(m.id) for m in found), default=0)
        for old in self._overflow():
            self._remove_files(old.id)
        return len(self._mails)

    async def add(
        self, mail: SentMail, *, received_at: float | None = None
    ) -> StoredMail:
        """Save a message and index it; drop the oldest past the limit.

        Raises:
            OSError: It could not be saved (nothing is left half-written).
        """
        when = time.time() if received_at is None else received_at
        self._sequence += 1
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
        mail_id = f"{stamp}-{self._sequence:06d}"
        # Parsing the message takes milliseconds: not on the event loop.
        stored = await asyncio.to_thread(self._save, mail, mail_id, when)
        self._mails[mail_id] = stored
        self._announce(Change("added", stored))
        dropped = self._overflow()
        if dropped:
            await asyncio.to_thread(self._remove_all_files, [m.id for m in dropped])
            for old in dropped:
                self._announce(Change("deleted", old))
        return stored

    async def update(
        self,
        mail_id: str,
        *,
        read: bool | None = None,
        remote_images: bool | None = None,
    ) -> StoredMail:
        """Change a message's flags and save them.

        Raises:
            KeyError: No such message.
            OSError: The flags could not be saved.
        """
        stored = self._mails[mail_id].with_flags(read=read, remote_images=remote_images)
        if stored == self._mails[mail_id]:
            return stored
        await asyncio.to_thread(self._write_sidecar, stored)
        if mail_id in self._mails:  # not deleted while the file was written
            self._mails[mail_id] = stored
            self._announce(Change("updated", stored))
        return stored

    async def delete(self, mail_id: str) -> bool:
        """Delete one message; returns whether it existed."""
        stored = self._mails.pop(mail_id, None)
        if stored is None:
            return False
        await asyncio.to_thread(self._remove_files, mail_id)
        self._announce(Change("deleted", stored))
        return True

    async def clear(self) -> int:
        """Delete every message; returns how many there were."""
        ids = list(self._mails)
        self._mails = {}
        await asyncio.to_thread(self._remove_all_files, ids)
        self._announce(Change("cleared"))
        return len(ids)

    # -- internals ------------------------------------------------------------

    def _overflow(self) -> list[StoredMail]:
        if self.max_messages is None:
            return []
        dropped = []
        while len(self._mails) > self.max_messages:
            oldest = next(iter(self._mails))
            dropped.append(self._mails.pop(oldest))
        return dropped

    def _announce(self, change: Change) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(change)
            except Exception:  # noqa: BLE001 - a watcher must never lose a message
                LOG.exception("inbox: a subscriber failed")

    def _save(self, mail: SentMail, mail_id: str, when: float) -> StoredMail:
        stored = summarise(mail, id=mail_id, received_at=when)
        self._write(stored, mail.raw)
        return stored

    def _write(self, stored: StoredMail, raw: bytes) -> None:
        # The .eml first: a crash between the two leaves an .eml the next load
        # indexes, never an index entry without its message.
        # Atomic, not fsynced: never a half-written file, but a development
        # inbox does not pay a disk flush per message for power-cut safety.
        write_atomically(self.path(stored.id), raw, durable=False)
        try:
            self._write_sidecar(stored)
        except OSError:
            with contextlib.suppress(OSError):
                self.path(stored.id).unlink()
            raise

    def _write_sidecar(self, stored: StoredMail) -> None:
        index = self.directory / INDEX_FOLDER
        index.mkdir(exist_ok=True)
        data = json.dumps(stored.to_json(), ensure_ascii=False).encode()
        write_atomically(index / f"{stored.id}.json", data, durable=False)

    def _remove_files(self, mail_id: str) -> None:
        for path in (
            self.path(mail_id),
            self.directory / INDEX_FOLDER / f"{mail_id}.json",
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _remove_all_files(self, ids: list[str]) -> None:
        for mail_id in ids:
            try:
                self._remove_files(mail_id)
            except OSError as exc:
                LOG.warning(
                    "inbox: cannot delete message %s: %s", mail_id, exc.strerror
                )


def _is_id(name: str) -> bool:
    return MESSAGE_ID.fullmatch(name) is not None


def is_message_id(name: str) -> bool:
    """Return whether ``name`` has the form of a message id (safe in a path)."""
    return _is_id(name)


def _sequence_of(mail_id: str) -> int:
    match = _OWN_NAME.fullmatch(mail_id)
    return int(match.group(1)) if match else 0


def _read_sidecar(path: Path) -> StoredMail | None:
    try:
        return StoredMail.from_json(json.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        LOG.warning("inbox: ignoring the damaged index file %s", path.name)
        return None


def _index_file(eml: Path, mail_id: str) -> StoredMail | None:
    """Index an .eml that has no saved record: the envelope comes from headers."""
    try:
        raw = eml.read_bytes()
        received_at = eml.stat().st_mtime
    except OSError as exc:
        LOG.warning("inbox: cannot read %s: %s", eml.name, exc.strerror)
        return None
    headers = SentMail(envelope=Envelope(mail_from="", rcpt_tos=()), raw=raw)
    envelope = Envelope(
        mail_from=next(iter(headers.from_), ""),
        rcpt_tos=(*headers.to, *headers.cc),
    )
    stored = summarise(
        SentMail(envelope=envelope, raw=raw), id=mail_id, received_at=received_at
    )
    index = eml.parent / INDEX_FOLDER
    with contextlib.suppress(OSError):
        write_atomically(
            index / f"{mail_id}.json",
            json.dumps(stored.to_json(), ensure_ascii=False).encode(),
        )
    return stored
