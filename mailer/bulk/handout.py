"""Share a spooled batch among sender processes: chunks, connections, result frames.

The pure parts of ``mailer.bulk.senders``, kept apart so they can be tested
without processes or sockets: how MAILER_CONCURRENCY is split among the
senders (``concurrency_shares``), which chunk goes to which sender and when
(``ChunkDealer``), how results are gathered into small frames on the way back
(``ResultBatch``, each SendResult as plain values: ``pack_result``) and how
a byte stream is cut into those frames again (``FrameReader``).
"""

from __future__ import annotations

import pickle
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mailer.delivery.results import SendResult, SendStatus
from mailer.replies import RecipientStatus, Reply

# Chunks a sender holds that it has not finished: the one it reads, one ready.
AHEAD_PER_SENDER = 2
# A sender sends its results back once it has this many...
FLUSH_RESULTS = 64
# ...or once the oldest unsent one is this old (seconds).
FLUSH_AFTER = 0.02
_LENGTH = struct.Struct(">I")  # before each pickled frame


def concurrency_shares(total: int, senders: int) -> list[int]:
    """Split ``total`` connections among ``senders``, the first ones taking the rest.

    Args:
        total: MAILER_CONCURRENCY.
        senders: How many sender processes (at most ``total``).

    Returns:
        Each sender's connections: 5 over 2 is ``[3, 2]``; they sum to ``total``.

    Raises:
        ValueError: ``senders`` is below 1 or above ``total``.
    """
    if not 1 <= senders <= total:
        raise ValueError(f"cannot split {total} connections among {senders} senders")
    base, extra = divmod(total, senders)
    return [base + (1 if number < extra else 0) for number in range(senders)]


@dataclass
class _Holding:
    """What one sender holds: chunks handed to it, and whether it started each."""

    unfinished: dict[int, bool] = field(default_factory=dict)  # chunk -> started


class ChunkDealer:
    """Hand a batch's chunks out in order, to whichever sender asks for more.

    A sender gets ``AHEAD_PER_SENDER`` chunks at first, then one more each
    time it starts reading one: a slow sender asks less often, so it never
    holds back more than that many chunks of the batch.

    Args:
        chunks: The chunk numbers, in the order they are to be sent.
        senders: How many senders share them.
    """

    def __init__(self, chunks: Iterable[int], senders: int) -> None:
        self._left: deque[int] = deque(chunks)
        self._held = [_Holding() for _ in range(senders)]

    @property
    def is_empty(self) -> bool:
        """Return whether every chunk has been handed out."""
        return not self._left

    def first_deal(self) -> list[tuple[int, int]]:
        """Return ``(sender, chunk)`` for the start: one each in turn, twice over."""
        dealt = []
        for _ in range(AHEAD_PER_SENDER):
            for sender in range(len(self._held)):
                chunk = self.deal(sender)
                if chunk is not None:
                    dealt.append((sender, chunk))
        return dealt

    def deal(self, sender: int) -> int | None:
        """Hand the next chunk to ``sender``; None when none is left."""
        if not self._left:
            return None
        chunk = self._left.popleft()
        self._held[sender].unfinished[chunk] = False
        return chunk

    def started(self, sender: int, chunk: int) -> int | None:
        """Note that ``sender`` started ``chunk``; return the chunk it gets now."""
        self.note_started(sender, chunk)
        return self.deal(sender)

    def note_started(self, sender: int, chunk: int) -> None:
        """Note that ``sender`` started ``chunk`` (its rows may have gone out)."""
        self._held[sender].unfinished[chunk] = True

    def finished(self, sender: int, chunk: int) -> None:
        """Note that every row of ``chunk`` has come back from ``sender``."""
        self._held[sender].unfinished.pop(chunk, None)

    def unfinished(self, sender: int) -> list[tuple[int, bool]]:
        """Return ``(chunk, started)`` for each chunk ``sender`` has not finished."""
        return sorted(self._held[sender].unfinished.items())

    def forget(self, sender: int) -> None:
        """Drop what ``sender`` held (its rows were accounted for otherwise)."""
        self._held[sender].unfinished.clear()

    def take_rest(self) -> list[int]:
        """Return the chunks never handed out, and hand out no more."""
        rest = list(self._left)
        self._left.clear()
        return rest


class ResultBatch:
    """Results waiting to go back to the parent, a frame's worth at a time.

    Args:
        size: Send once this many wait.
        age: Send once the oldest has waited this long (seconds).
    """

    def __init__(self, size: int = FLUSH_RESULTS, age: float = FLUSH_AFTER) -> None:
        self.size = size
        self.age = age
        self._items: list[Any] = []
        self._since: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Any, now: float) -> bool:
        """Keep ``item``; return whether the batch is full and must go now."""
        if self._since is None:
            self._since = now
        self._items.append(item)
        return len(self._items) >= self.size

    def is_due(self, now: float) -> bool:
        """Return whether the oldest item has waited ``age`` seconds."""
        return self._since is not None and now - self._since >= self.age

    def take(self) -> list[Any]:
        """Return the items kept, in order, and start afresh."""
        items, self._items, self._since = self._items, [], None
        return items


def frame(items: list[Any]) -> bytes:
    """Return ``items`` as one frame: its length, then its pickle."""
    data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class FrameReader:
    """Cut the bytes read from a pipe back into the frames ``frame`` made."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return the items of every frame now complete, in order."""
        self._buffer += data
        items: list[Any] = []
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            end = start + _LENGTH.size + length
            if len(buffer) < end:
                break
            # Our own pipe, from a process this one forked: never data from
            # elsewhere.
            items.extend(pickle.loads(buffer[start + _LENGTH.size : end]))  # noqa: S301
            start = end
        del buffer[:start]
        return items

    @property
    def is_partial(self) -> bool:
        """Return whether part of a frame is waiting for the rest."""
        return bool(self._buffer)


# A SendResult as plain values, field by field (the names are checked by a
# test): pickling the frozen dataclasses themselves goes through dataclasses'
# generic __getstate__/__setstate__, 50 us a result there and back, where
# these take a tenth of it.
RESULT_FIELDS = (
    "status",
    "to",
    "message_id",
    "accepted",
    "refused",
    "reply",
    "error",
    "transient",
    "attempts",
    "ambiguous",
    "recipients",
)
PackedResult = tuple[Any, ...]


def pack_result(result: SendResult) -> PackedResult:
    """Return ``result`` as plain values, for ``unpack_result`` in another process."""
    reply = result.reply
    return (
        result.status.value,
        result.to,
        result.message_id,
        result.accepted,
        {rcpt: (r.code, r.text) for rcpt, r in result.refused.items()},
        None if reply is None else (reply.code, reply.text),
        result.error,
        result.transient,
        result.attempts,
        result.ambiguous,
        {rcpt: status.value for rcpt, status in result.recipients.items()},
    )


def unpack_result(packed: PackedResult) -> SendResult:
    """Return the SendResult ``pack_result`` was given."""
    (
        status,
        to,
        message_id,
        accepted,
        refused,
        reply,
        error,
        transient,
        attempts,
        ambiguous,
        recipients,
    ) = packed
    return SendResult(
        SendStatus(status),
        to,
        message_id,
        accepted,
        {rcpt: Reply(code, text) for rcpt, (code, text) in refused.items()},
        None if reply is None else Reply(*reply),
        error,
        transient,
        attempts,
        ambiguous,
        {rcpt: RecipientStatus(value) for rcpt, value in recipients.items()},
    )
