"""Remember what the check pass saw of each row, so the send pass sends only that.

A recipients file is read more than once: the check pass renders every row
before anything is sent, then the send pass reads it again (and a journal's
first run reads it a third time to record every message). If the file is
rewritten in place meanwhile, a position no longer holds the row that was
checked. ``CheckedRows`` keeps, for each row of the check pass, its line, a
64-bit fingerprint of its content and what it was (valid, invalid, a repeated
address): 13 bytes a row, plus one set entry per distinct address (about 80
bytes; 12 MB more peak memory in all for 100,000 distinct rows). The send
pass replays the file through it, and the first row that differs (or a row
too many, or too few) raises ``RecipientsChangedError`` before that row is
sent. The same fingerprint, stored in the journal, ties each journal entry to
its row.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.bulk.recipients import InvalidRow, Recipient
from mailer.exceptions import RecipientsChangedError, RecipientsFileError

VALID, INVALID, REPEAT = 0, 1, 2
# One encoder for every row (json.dumps with options builds one per call).
_ENCODER = json.JSONEncoder(sort_keys=True, default=str)


def row_item(row: Recipient | InvalidRow) -> bytes:
    """Return the canonical bytes of a row: its line and every value it holds.

    The same bytes as ``json.dumps(item, sort_keys=True, default=str)``, which
    journals have always digested: their fingerprints stay comparable.
    """
    if isinstance(row, Recipient):
        item: Any = [row.line, row.email, row.name, dict(row.context)]
    else:
        item = [row.line, row.error]
    return _ENCODER.encode(item).encode()


def _hex(fingerprint: int) -> str:
    return fingerprint.to_bytes(8, "big").hex()


def _fingerprint(item: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(item, digest_size=8).digest(), "big")


def address_key(email: str) -> int:
    """Return the key under which two addresses count as the same (case ignored).

    Strictly, the local part of an address is case-sensitive (RFC 5321 2.4),
    but no mailbox provider treats it so, and a list that holds both
    ``Ann@x`` and ``ann@x`` means one person.
    """
    return _fingerprint(email.strip().casefold().encode())


@dataclass(frozen=True, slots=True)
class CheckSummary:
    """What the check pass found in a batch's rows.

    Attributes:
        rows: Rows read (blank lines aside).
        valid: Rows that render into a valid message.
        invalid: Rows that do not.
        repeated: Valid rows whose address an earlier valid row has already
            (compared ignoring case).
        repeated_addresses: Distinct addresses on more than one row.
        example: The first repeated address and the line it repeats on.
    """

    rows: int = 0
    valid: int = 0
    invalid: int = 0
    repeated: int = 0
    repeated_addresses: int = 0
    example: tuple[str, int] | None = None

    def describe_repeats(self, *, dedupe: bool) -> str:
        """Return one line about repeated addresses ("" when there is none)."""
        if not self.repeated:
            return ""
        where = ""
        if self.example is not None:
            where = f" (first: {self.example[0]} again on line {self.example[1]})"
        what = (
            f"{self.repeated} row(s) repeat the address of an earlier row: "
            f"{self.repeated_addresses} address(es) on more than one row{where}"
        )
        if dedupe:
            return f"{what}; --dedupe: each address is sent once, the repeats skipped"
        return f"{what}; each row is sent (add --dedupe to send once per address)"


class CheckedRows:
    """The check pass's record of every row, replayed by the send pass.

    Args:
        label: What the rows are (the file path), for error messages.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        # Set when the send pass does not read the file again (it sends from
        # the spool): then only this notices a file changed under the run.
        self.watch: FileWatch | None = None
        self._prints = array("Q")
        self._lines = array("L")
        self._kinds = bytearray()
        self._addresses: set[int] = set()
        self._repeated_addresses: set[int] = set()
        self._digest = hashlib.sha256()
        self._example: tuple[str, int] | None = None
        self._valid = self._invalid = self._repeated = 0

    def __len__(self) -> int:
        return len(self._kinds)

    def add(self, row: Recipient | InvalidRow, *, valid: bool) -> None:
        """Record the next row, and whether it rendered into a valid message."""
        item = row_item(row)
        self._digest.update(item + b"\n")
        self._prints.append(_fingerprint(item))
        self._lines.append(row.line)
        if not valid or not isinstance(row, Recipient):
            self._kinds.append(INVALID)
            self._invalid += 1
            return
        self._valid += 1
        key = address_key(row.email)
        if key in self._addresses:
            self._kinds.append(REPEAT)
            self._repeated += 1
            self._repeated_addresses.add(key)
            if self._example is None:
                self._example = (row.email, row.line)
        else:
            self._addresses.add(key)
            self._kinds.append(VALID)

    @property
    def digest(self) -> str:
        """Return the digest of every row (a journal's batch fingerprint)."""
        return self._digest.hexdigest()

    def summary(self) -> CheckSummary:
        """Return the counts of the check pass."""
        return CheckSummary(
            rows=len(self),
            valid=self._valid,
            invalid=self._invalid,
            repeated=self._repeated,
            repeated_addresses=len(self._repeated_addresses),
            example=self._example,
        )

    def is_repeat(self, position: int) -> bool:
        """Return whether the row at ``position`` (from 1) repeats an address."""
        return self._kinds[position - 1] == REPEAT

    def is_invalid(self, position: int) -> bool:
        """Return whether the row at ``position`` (from 1) was found bad."""
        return self._kinds[position - 1] == INVALID

    def fingerprint(self, position: int) -> str:
        """Return the fingerprint of the row at ``position``: 16 hex digits."""
        return _hex(self._prints[position - 1])

    def line(self, position: int) -> int:
        """Return the line of the row at ``position`` (from 1) in the check pass."""
        return self._lines[position - 1]

    def replay(
        self, rows: Iterable[Recipient | InvalidRow]
    ) -> Iterator[tuple[int, Recipient | InvalidRow]]:
        """Yield ``(position, row)`` for rows read again, each the same as checked.

        Raises:
            RecipientsChangedError: A row differs from the one checked at its
                position, the rows run past or stop short of those checked, or
                the file can no longer be read: it changed. The rows yielded
                before are those that were checked.
        """
        position = 0
        try:
            for row in rows:
                position += 1
                if position > len(self):
                    raise self._changed(
                        f"it has more rows than were checked (line {row.line})"
                    )
                if _fingerprint(row_item(row)) != self._prints[position - 1]:
                    raise self._changed(
                        f"line {row.line} is not the row checked at line "
                        f"{self.line(position)}"
                    )
                yield position, row
        except RecipientsChangedError:
            raise
        except RecipientsFileError as exc:
            raise self._changed(f"it can no longer be read ({exc})") from None
        if position < len(self):
            raise self._changed(
                f"it ends before line {self.line(position + 1)}, which was checked"
            )

    def check_unchanged(self) -> None:
        """Raise if the watched file changed since the check pass began reading it.

        Raises:
            RecipientsChangedError: It did (or is gone).
        """
        if self.watch is not None:
            detail = self.watch.change()
            if detail is not None:
                raise self._changed(detail)

    def _changed(self, detail: str) -> RecipientsChangedError:
        return RecipientsChangedError(
            f"{self.label} changed while the batch was running: {detail}; no "
            "further message is sent",
            path=self.label,
        )


class FileWatch:
    """Notice that a file was rewritten, replaced or removed, without reading it.

    A send pass that sends what the check pass spooled never reads the file
    again, so it cannot compare rows. It compares the file's inode, size and
    modification time with those it had when the check began: an edit means
    the user changed their mind about the batch, so it stops, as a send pass
    that reads the rows again does.

    Args:
        path: The recipients file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._look()

    def _look(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns

    def change(self) -> str | None:
        """Return what changed since the watch began, or None (one ``stat``, ~1 us)."""
        seen = self._look()
        if seen == self._seen:
            return None
        if seen is None:
            return "it can no longer be read"
        if self._seen is None or seen[0] != self._seen[0]:
            return "it was replaced by another file"
        return "it was written to since the check began"
