"""Attach files to every message of a batch, or per row from a column.

``--attach`` files go on every message; ``--attach-column COLUMN
--attachments-dir DIR`` lets each row name its own (``;``-separated, relative
to DIR). A path that leaves DIR (``..``, absolute, a symlink pointing out) or a
missing file makes the row bad, so the batch is refused before anything is
sent, with the row's line number.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from mailer.bulk.recipients import Recipient
from mailer.config.settings import MailerSettings
from mailer.content.addresses import excerpt
from mailer.content.attachments import Attachment
from mailer.delivery.limits import check_attachment_limits
from mailer.exceptions import MessageError

SEPARATOR = ";"
# Encoded bytes of files kept for reuse by later rows. An Attachment keeps its
# encoding for as long as it lives, so keeping one per file for the whole
# batch (1,024 of them, as before) held every row's own invoice: 300 rows of
# 2 MB each took 1.66 GB. Past this budget the least recently used go.
CACHE_BYTES = 64 * 1024 * 1024


class FileAttachments:
    """The Attachment objects of files named by rows, within a budget of bytes.

    Rows naming the same file while it is kept share one object, so the file
    is read and encoded once for all of them; a file dropped from the cache
    is read again if a later row names it.

    Args:
        budget: The encoded bytes to keep, at most (one larger file is kept
            alone).
    """

    def __init__(self, budget: int = CACHE_BYTES) -> None:
        self.budget = budget
        self._kept: OrderedDict[Path, tuple[Attachment, int]] = OrderedDict()
        self._bytes = 0
        # The check pass runs in a worker thread, the send pass on the loop.
        self._lock = threading.Lock()

    @property
    def kept_bytes(self) -> int:
        """Return the encoded size of the files kept now."""
        return self._bytes

    def get(self, path: Path) -> Attachment:
        """Return the Attachment for ``path``: the kept one, or a new one."""
        with self._lock:
            found = self._kept.get(path)
            if found is not None:
                self._kept.move_to_end(path)
                return found[0]
            attachment = Attachment.from_path(path)
            try:
                size = attachment.encoded_size()
            except MessageError:
                size = 0  # unreadable: reading it will say so, with the path
            self._kept[path] = (attachment, size)
            self._bytes += size
            while self._bytes > self.budget and len(self._kept) > 1:
                _, (_, dropped) = self._kept.popitem(last=False)
                self._bytes -= dropped
            return attachment

    def clear(self) -> None:
        """Forget every kept file."""
        with self._lock:
            self._kept.clear()
            self._bytes = 0


FILES = FileAttachments()


def file_attachment(path: Path) -> Attachment:
    """Return the Attachment object for ``path`` (shared while ``FILES`` keeps it).

    Rows naming the same file share it, so the file is read and encoded once
    for all of them, within ``CACHE_BYTES``.
    """
    return FILES.get(path)


@dataclass(frozen=True, slots=True)
class RowAttachments:
    """Which files each row's message carries.

    Attributes:
        common: Attached to every message (``--attach``).
        column: The recipients column naming each row's own files.
        directory: Where the column's files are; nothing outside it is read.
    """

    common: tuple[Attachment, ...] = ()
    column: str | None = None
    directory: Path | None = None
    _root: Path | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.column is not None and self.directory is None:
            raise MessageError(
                "--attachments-dir: required with --attach-column",
                field="--attachments-dir",
            )
        if self.directory is not None:
            object.__setattr__(self, "_root", self.directory.resolve())

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[Path],
        *,
        column: str | None = None,
        directory: Path | None = None,
    ) -> RowAttachments:
        """Return the attachments for ``--attach`` paths (checked now) and a column.

        Raises:
            MessageError: A path is not a readable file (field ``--attach``),
                or the directory is missing.
        """
        common = []
        for path in paths:
            if not _is_file(path, field="--attach"):
                raise MessageError(
                    f"--attach: {str(path)!r} is not a file", field="--attach"
                )
            common.append(file_attachment(path.resolve()))
        if directory is not None and not directory.is_dir():
            raise MessageError(
                f"--attachments-dir: {str(directory)!r} is not a directory",
                field="--attachments-dir",
            )
        return cls(tuple(common), column, directory)

    def for_row(self, row: Recipient) -> tuple[Attachment, ...]:
        """Return the files for one row: the common ones, then the row's own.

        Raises:
            MessageError: A named file escapes the directory or does not exist
                (the field is the column).
        """
        if self.column is None or self._root is None:
            return self.common
        value = row.context.get(self.column)
        if value is None or value == "":
            return self.common
        if not isinstance(value, str):
            raise MessageError(
                f"{self.column}: expected file names separated by "
                f"{SEPARATOR!r}, got {type(value).__name__}",
                field=self.column,
            )
        files = list(self.common)
        for name in value.split(SEPARATOR):
            path = self._resolve(name.strip())
            if path is not None and file_attachment(path) not in files:
                files.append(file_attachment(path))  # a file named twice goes once
        return tuple(files)

    def _resolve(self, name: str) -> Path | None:
        if not name:
            return None
        assert self._root is not None  # noqa: S101 - checked by the caller
        column = self.column or "attachments"
        if (
            PurePosixPath(name).is_absolute()
            or PureWindowsPath(name).is_absolute()
            or PureWindowsPath(name).drive
            or ".." in PurePosixPath(name.replace("\\", "/")).parts
        ):
            raise MessageError(
                f"{column}: {excerpt(name)} leaves the attachments directory; "
                "name files relative to it",
                field=column,
            )
        try:
            path = (self._root / name).resolve()
            is_file = path.is_file()
        except (OSError, ValueError) as exc:
            # A NUL byte (ValueError) or a name too long for the file system
            # (ENAMETOOLONG is not one of the errors is_file() swallows).
            raise MessageError(
                f"{column}: {excerpt(name)} cannot be a file name here: {_reason(exc)}",
                field=column,
            ) from None
        if not path.is_relative_to(self._root):
            raise MessageError(
                f"{column}: {excerpt(name)} points outside the attachments "
                "directory (a symlink?)",
                field=column,
            )
        if not is_file:
            raise MessageError(
                f"{column}: {excerpt(name)}: no such file in {self.directory}",
                field=column,
            )
        return path


def _reason(error: OSError | ValueError) -> str:
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return "it holds a NUL byte" if "null" in str(error) else str(error)


def _is_file(path: Path, *, field: str) -> bool:
    """Return whether ``path`` is a file; raise one line for an impossible name."""
    try:
        return path.is_file()
    except (OSError, ValueError) as exc:
        raise MessageError(
            f"{field}: {excerpt(str(path))} cannot be a file name here: {_reason(exc)}",
            field=field,
        ) from None


def check_attachments_size(
    attachments: Iterable[Attachment], settings: MailerSettings
) -> None:
    """Raise if the attachments alone make a message over MAILER_MAX_MESSAGE_SIZE.

    Checked for every row in the check pass (the encoded size is computed,
    nothing is encoded), so such a batch is refused before anything is sent.
    The whole message is checked again when it is built.

    Raises:
        MessageError: Over the limit (field ``size``).
    """
    check_attachment_limits(attachments, settings)
