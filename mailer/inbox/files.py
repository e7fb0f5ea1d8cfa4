"""Write files atomically: a temporary file beside the target, then a rename."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that it is whole or absent, never truncated.

    The bytes go to a hidden temporary file in the same folder, are flushed to
    disk (with ``durable``), and the file is renamed over ``path`` (atomic on
    POSIX). On any error (a full disk, a file-size limit, a folder that
    vanished) the temporary file is removed and the error raised; ``path`` is
    left as it was.

    Raises:
        OSError: The file could not be written.
    """
    temporary = path.with_name(f".{path.name}{TEMPORARY_SUFFIX}")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            if durable:
                # Without it a power cut can leave an empty file under the new name.
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def remove_leftovers(folder: Path) -> int:
    """Delete temporary files a crash left in ``folder``.

    Returns:
        How many were removed.
    """
    removed = 0
    for leftover in folder.glob(f".*{TEMPORARY_SUFFIX}"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed += 1
    return removed
