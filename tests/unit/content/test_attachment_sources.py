"""An attachment path that is not a regular file is refused, never read for ever.

Found by attacking Attachment.from_path: /dev/zero has no size (0 to the
limit check) and was read until memory ran out (MemoryError at 1.5 GB under a
limit, unbounded without); a FIFO without a writer blocked the event loop for
ever. Each check runs in a child process with a memory limit and a timeout, so
a regression fails the test instead of taking the machine down.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1_000_000_000, 1_000_000_000))
from mailer import Attachment, MailerSettings, Message, MessageClient
from mailer.exceptions import MessageError
from mailer.testing import MemoryTransport

async def main():
    settings = MailerSettings(_env_file=None, from_="shop@example.test")
    message = Message(to="ann@example.test", subject="s", body="b",
                      attachments=[Attachment.from_path(sys.argv[1])])
    async with MessageClient(settings, transport=MemoryTransport()) as client:
        try:
            await client.send(message)
        except MessageError as exc:
            print(exc.field, exc)
            return
    print("sent")

asyncio.run(main())
"""


def attach_in_a_child(path: Path | str) -> str:
    """Send a message attaching ``path`` in a child process; return what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILER_")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_path_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, kind: str
) -> None:
    """/dev/zero, a FIFO with no writer, a folder: one error naming attachment.path."""
    if kind == "device":
        path: Path = Path("/dev/zero")
    elif kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    else:
        path = tmp_path
    printed = attach_in_a_child(path)
    assert printed.startswith("attachment.path "), printed
    assert "not a regular file" in printed


def test_a_regular_file_is_still_sent(tmp_path: Path) -> None:
    """A plain file goes out as before."""
    path = tmp_path / "invoice.pdf"
    path.write_bytes(b"%PDF-1 invoice")
    assert attach_in_a_child(path).strip() == "sent"
