"""Keep a batch's prepared messages on disk from the check pass to the send pass.

The check pass renders every row before anything is sent (a bad row stops the
batch). Rather than throw that work away and render each row again to send
it, the pass also prepares each message (Message-ID, Date, serialisation,
DKIM signature: ``mailer.delivery.prepare``) and writes it here; the send
pass reads the messages back in order and only speaks SMTP. Memory stays
flat: the spool is a private temporary folder of chunk files, one per
``CHUNK_ROWS`` rows, each read (and deleted) as the send pass reaches it,
and the whole folder is removed when the batch ends, however it ends.

A message larger than ``SPOOLED_SIZE_LIMIT`` (a big attachment), or one
that would take the spool past its disk budget, is kept as its row only and
rendered again when its turn comes: a batch with a 1 MB attachment must not
write a megabyte per row to the disk first.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from mailer.bulk.recipients import Recipient
from mailer.content.message import Envelope
from mailer.delivery.results import SendResult
from mailer.delivery.state import PreparedMessage

# Rows per chunk file: the unit a worker process takes, and what a reader holds.
CHUNK_ROWS = 256
# Messages larger than this are rendered again when sent, not written here.
SPOOLED_SIZE_LIMIT = 256 * 1024
# The spool never takes more than this share of the free disk space...
DISK_SHARE = 0.25
# ...nor more than this in all.
DISK_BUDGET = 4 * 1024**3
_LENGTH = struct.Struct(">I")  # before each pickled row


class Room(Protocol):
    """A disk budget messages are written against (a Spool's, or a worker's share)."""

    def take_room(self, size: int, /) -> bool:
        """Reserve ``size`` bytes; False when the message must not be spooled."""
        ...


class ByteBudget:
    """A share of a spool's disk budget, handed to a worker process with its chunk.

    Args:
        size: Bytes it may take.
    """

    def __init__(self, size: int) -> None:
        self.left = size

    def take_room(self, size: int, /) -> bool:
        """Reserve ``size`` bytes of the share; False once it is spent."""
        if size > SPOOLED_SIZE_LIMIT or size > self.left:
            return False
        self.left -= size
        return True


@dataclass(frozen=True, slots=True)
class SpooledRow:
    """One valid row, as the check pass left it for the send pass.

    Attributes:
        position: The row's place in the source (from 1).
        row: The row itself (to render it again when ``message`` is None).
        message: The prepared message; None when it is rendered at its turn
            (too large to spool) or could not be prepared (``failure``).
        failure: The result of a message that could not be prepared (over a
            size limit, say): it ends ``failed`` at its turn, unsent.
        recipients: Its envelope recipients, counted for the outcome log.
    """

    position: int
    row: Recipient
    message: PreparedMessage | None = None
    failure: SendResult | None = None
    recipients: int = 1


class Spool:
    """A private folder of chunk files, removed by ``close`` (or ``with``).

    Args:
        folder: Where to make it; default the system's temporary folder.
    """

    def __init__(self, folder: Path | str | None = None) -> None:
        # mkdtemp makes the folder readable by this user only (0700): the
        # messages in it are personal data.
        self.path = Path(tempfile.mkdtemp(prefix="mailer-spool-", dir=folder))
        free = shutil.disk_usage(self.path).free
        self._budget = min(DISK_BUDGET, int(free * DISK_SHARE))
        self.chunks = 0  # chunk files written, numbered from 0

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the folder and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)

    def chunk_path(self, number: int) -> Path:
        """Return the file of chunk ``number``."""
        return self.path / f"{number:08d}"

    def writer(self, number: int) -> ChunkWriter:
        """Return a writer for chunk ``number`` (created now)."""
        self.chunks = max(self.chunks, number + 1)
        return ChunkWriter(self.chunk_path(number), self)

    def take_room(self, size: int, /) -> bool:
        """Reserve ``size`` bytes of the disk budget; False once it is spent."""
        if size > SPOOLED_SIZE_LIMIT or size > self._budget:
            return False
        self._budget -= size
        return True

    def lend(self, size: int) -> int:
        """Take up to ``size`` bytes of the budget for a worker's chunk; return them."""
        lent = min(size, self._budget)
        self._budget -= lent
        return lent

    def give_back(self, size: int) -> None:
        """Return the unused part of what ``lend`` took."""
        self._budget += size

    def read(self, number: int, *, remove: bool = True) -> Iterator[SpooledRow]:
        """Yield the rows of chunk ``number`` in order, then delete its file."""
        yield from read_chunk(self.chunk_path(number), remove=remove)

    def rows(self) -> Iterator[SpooledRow]:
        """Yield every row of every chunk, in order (each file deleted once read)."""
        for number in range(self.chunks):
            yield from self.read(number)


class ChunkWriter:
    """Write one chunk file: each SpooledRow pickled alone, after its length.

    Args:
        path: The chunk file.
        spool: Whose disk budget the messages count against (a Spool, or a
            worker's ByteBudget).
    """

    def __init__(self, path: Path, spool: Room | None = None) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO = os.fdopen(descriptor, "wb")
        self._spool = spool

    def write(self, spooled: SpooledRow) -> None:
        """Append a row; its message is dropped to the row if the budget is spent."""
        message = spooled.message
        if (
            message is not None
            and self._spool is not None
            and not self._spool.take_room(len(message.content))
        ):
            spooled = SpooledRow(spooled.position, spooled.row, None, None)
        data = pickle.dumps(_encode(spooled), protocol=pickle.HIGHEST_PROTOCOL)
        self._file.write(_LENGTH.pack(len(data)) + data)

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_chunk(path: Path, *, remove: bool = True) -> Iterator[SpooledRow]:
    """Yield the rows of one chunk file in order; delete it after if ``remove``."""
    with path.open("rb") as handle:
        while header := handle.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(header)
            # Our own file, written by this batch in a folder only this user
            # can open (0700), never data from elsewhere.
            yield _decode(pickle.loads(handle.read(length)))  # noqa: S301
    if remove:
        path.unlink(missing_ok=True)


# A spooled row as plain values: pickling the frozen dataclasses themselves
# goes through dataclasses' generic __getstate__/__setstate__, which took a
# tenth of the check pass and of the send pass.
_Encoded = tuple[Any, ...]


def _encode(spooled: SpooledRow) -> _Encoded:
    row, message = spooled.row, spooled.message
    prepared = None
    if message is not None:
        envelope = message.envelope
        prepared = (
            envelope.mail_from,
            envelope.rcpt_tos,
            envelope.smtputf8,
            message.content,
            message.message_id,
            message.date,
            message.to,
        )
    return (
        spooled.position,
        row.line,
        row.email,
        row.name,
        dict(row.context),
        prepared,
        spooled.failure,
        spooled.recipients,
    )


def _decode(values: _Encoded) -> SpooledRow:
    position, line, email, name, context, prepared, failure, recipients = values
    message = None
    if prepared is not None:
        mail_from, rcpt_tos, smtputf8, content, message_id, date, to = prepared
        message = PreparedMessage(
            _envelope(mail_from, rcpt_tos, smtputf8), content, message_id, date, to
        )
    row = Recipient(line, email, name, context)
    return SpooledRow(position, row, message, failure, recipients)


def _envelope(mail_from: str, rcpt_tos: tuple[str, ...], smtputf8: bool) -> Envelope:
    """Rebuild an envelope this batch checked when it made it (no second check)."""
    envelope = object.__new__(Envelope)
    object.__setattr__(envelope, "mail_from", mail_from)
    object.__setattr__(envelope, "rcpt_tos", rcpt_tos)
    object.__setattr__(envelope, "smtputf8", smtputf8)
    return envelope
