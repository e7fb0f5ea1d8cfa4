"""Note which attempts started sending their content, so a crash can be read back.

The journal commits ``sending`` before an attempt's first SMTP command. If the
process dies during the attempt, that row cannot say whether the content had
left, that is whether the message may have been delivered. A second commit
per message just before the content would say it, at the price of one more
fsync per message (the journal runs with ``synchronous=FULL``). Instead, just
before the first byte of an attempt's content is written, ``ContentLog.mark``
appends ``position attempt`` to a side file with one ``write(2)`` and no fsync:
a few microseconds.

Why that is enough: a ``write(2)`` that returned is in the kernel's page cache.
It outlives the process (``kill -9``, a crash, a second Ctrl-C), not the
machine (a power cut, a kernel panic). So the log is believed only when it
was written by the run the journal names (a random token in both) since the
machine last booted (its header holds the kernel's boot id). Otherwise, as
when the log is missing or unreadable, every message left ``sending`` counts
as ambiguous, as if no log existed.
"""

from __future__ import annotations

import os
from pathlib import Path

MAGIC = "mailer-content-log 1"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """Return the kernel's boot id, or "" where there is none (not Linux)."""
    try:
        return BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def log_path(journal: Path) -> Path:
    """Return where the content log of ``journal`` lives (beside it)."""
    return journal.with_name(journal.name + "-content")


class ContentLog:
    """The content log of one run, open for appending.

    Args:
        path: The file (truncated: a run starts its own log).
        run: The run's token, also recorded in the journal.
        boot: The boot id (``boot_id()``).

    Raises:
        OSError: The file cannot be written.
    """

    def __init__(self, path: Path, run: str, boot: str) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        self._fd = os.open(path, flags, 0o644)
        try:
            os.write(self._fd, f"{MAGIC} {run} {boot or '-'}\n".encode())
        except BaseException:
            os.close(self._fd)
            raise

    def mark(self, position: int, attempt: int) -> None:
        """Record that attempt ``attempt`` of message ``position`` starts its content.

        Raises:
            OSError: The write failed (a full disk): the content must not go.
        """
        line = f"{position} {attempt}\n".encode()
        if os.write(self._fd, line) != len(line):  # pragma: no cover - full disk
            raise OSError("short write to the content log")

    def close(self, *, remove: bool) -> None:
        """Close the log; ``remove`` it when the journal no longer needs it."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove:
            self.path.unlink(missing_ok=True)


def read_content_log(path: Path, run: str) -> frozenset[tuple[int, int]] | None:
    """Return the ``(position, attempt)`` pairs whose content started in run ``run``.

    Returns:
        The pairs, or None when the log cannot be believed: missing,
        unreadable, malformed, of another run, or written before the machine
        last booted.
    """
    try:
        lines = path.read_text(encoding="ascii").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    boot = boot_id()
    if not run or not boot or lines[0] != f"{MAGIC} {run} {boot}":
        return None
    if lines[-1] != "":
        return None  # a torn last line: not a clean write(2), so not this boot's
    marks: set[tuple[int, int]] = set()
    for text in lines[1:-1]:
        parts = text.split(" ")
        if len(parts) != 2 or not all(part.isdigit() for part in parts):
            return None
        marks.add((int(parts[0]), int(parts[1])))
    return frozenset(marks)
