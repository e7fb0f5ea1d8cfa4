"""The dev inbox under trouble (issue 11, items 14 and 15), on real sockets.

Its own failures answer 451 and name no path; files are whole or absent; a
closed stdout fails nothing; lines, connections and log lines are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from mailer.inbox.server import start_inbox

# The inbox_process fixture (conftest.py): starts `mailer inbox` in a process.
InboxStarter = Callable[..., Any]


def message(subject: str = "Hello", body: str = "hi") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "dev@example.test"
    mail["To"] = "you@example.test"
    mail["Subject"] = subject
    mail.set_content(body)
    return mail


async def send(port: int, mail: EmailMessage) -> tuple[int, str]:
    """Send one message; return the reply to the final dot (code, text)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
    await client.connect()
    try:
        errors, reply = await client.send_message(mail)
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    else:
        assert not errors
        return 250, reply
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()


async def test_a_deleted_inbox_folder_gets_451_and_no_path(tmp_path: Path) -> None:
    """A folder deleted under the inbox: 451 (try again), and the reply names no path."""
    folder = tmp_path / "secret-folder-name"
    async with await start_inbox(directory=folder) as inbox:
        shutil.rmtree(folder)
        code, text = await send(inbox.port, message())
        assert code == 451, text
        assert "secret-folder-name" not in text
        assert str(tmp_path) not in text
        assert inbox.messages == []


def _file_size_limit() -> None:
    # As a full disk would: writes past 16 KiB fail (EFBIG; Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))


async def test_a_failed_write_leaves_no_truncated_file_and_answers_451(
    inbox_process: InboxStarter,
) -> None:
    """A write that fails half-way (file-size limit): 451, no .eml left; small mail still kept."""
    async with inbox_process(preexec=_file_size_limit) as inbox:
        code, text = await send(inbox.smtp_port, message(body="x" * 60_000))
        assert code == 451, text
        assert str(inbox.directory) not in text
        assert list(inbox.directory.glob("*.eml")) == []
        assert [p.name for p in inbox.directory.glob(".*.tmp")] == []
        code, _ = await send(inbox.smtp_port, message("small"))
        assert code == 250
        [saved] = inbox.directory.glob("*.eml")
        assert saved.read_bytes().endswith(b"hi\r\n")


async def test_a_closed_stdout_never_fails_a_message(
    inbox_process: InboxStarter,
) -> None:
    """Output piped into `head` that exited: messages still get 250 and are saved."""
    async with inbox_process() as inbox:
        stdout = inbox.process.stdout
        assert stdout is not None
        # Close our end, as `head -1` does after the banner.
        transport = stdout._transport  # type: ignore[attr-defined]
        transport.close()
        for number in range(3):
            code, text = await send(inbox.smtp_port, message(f"after head {number}"))
            assert code == 250, text
        assert len(list(inbox.directory.glob("*.eml"))) == 3
        inbox.process.terminate()
        assert await asyncio.wait_for(inbox.process.wait(), timeout=30) == 143


async def test_an_endless_data_line_keeps_memory_bounded(
    inbox_process: InboxStarter,
) -> None:
    """128 MB of DATA without a line end: refused, and the inbox's memory barely moves."""
    async with inbox_process() as inbox:
        before = inbox.rss_kib()
        reader, writer = await asyncio.open_connection("127.0.0.1", inbox.smtp_port)
        try:
            assert (await reader.readline()).startswith(b"220")
            for command in (
                b"EHLO me",
                b"MAIL FROM:<a@example.test>",
                b"RCPT TO:<b@example.test>",
                b"DATA",
            ):
                writer.write(command + b"\r\n")
                while True:
                    line = await asyncio.wait_for(reader.readline(), timeout=30)
                    if line[3:4] != b"-":
                        break
            assert line.startswith(b"354"), line
            chunk = b"A" * (1 << 20)
            for _ in range(128):
                writer.write(chunk)
                await writer.drain()
            writer.write(b"\r\n.\r\n")
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), timeout=60)
        finally:
            writer.close()
            await writer.wait_closed()
        assert reply.startswith(b"500"), reply
        grown_mib = (inbox.rss_kib("VmHWM") - before) / 1024
        assert grown_mib < 32, f"the inbox grew by {grown_mib:.0f} MiB"
        code, _ = await send(inbox.smtp_port, message("still serving"))
        assert code == 250


async def test_connections_past_the_limit_get_421_until_one_closes(
    tmp_path: Path,
) -> None:
    """With max_connections=3 a 4th connection gets 421 and is closed; later ones get in."""
    async with await start_inbox(max_connections=3) as inbox:
        held = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", inbox.port)
            assert (await reader.readline()).startswith(b"220")
            held.append((reader, writer))
        reader, writer = await asyncio.open_connection("127.0.0.1", inbox.port)
        assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"421 4.7.0")
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed by the inbox
        writer.close()
        await writer.wait_closed()
        first_reader, first = held.pop()
        first.write(b"QUIT\r\n")
        assert (await first_reader.readline()).startswith(b"221")
        first.close()
        await first.wait_closed()
        async with asyncio.timeout(30):
            # The server has no "session closed" event to await; poll its count.
            while inbox.active_connections >= 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        code, _ = await send(inbox.port, message())
        assert code == 250
        for _, writer in held:
            writer.close()
            await writer.wait_closed()


def _few_file_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))


async def test_running_out_of_file_descriptors_is_logged_once_and_recovers(
    inbox_process: InboxStarter,
) -> None:
    """accept() failing for lack of descriptors: one line on stderr, no traceback; then serves again."""
    async with inbox_process(
        "--max-connections", "1000", preexec=_few_file_descriptors
    ) as inbox:
        stderr = inbox.process.stderr
        assert stderr is not None
        held = []
        for _ in range(80):
            held.append(await asyncio.open_connection("127.0.0.1", inbox.smtp_port))
        first = await asyncio.wait_for(stderr.readline(), timeout=30)
        assert b"cannot accept connections" in first, first
        # asyncio retries accept() every second; give it several retries.
        more = b""
        with contextlib.suppress(TimeoutError):
            more = await asyncio.wait_for(stderr.read(1 << 16), timeout=3.5)
        assert b"cannot accept" not in more, more
        assert b"Traceback" not in more, more
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        code, text = await send(inbox.smtp_port, message("after the storm"))
        assert code == 250, text


@pytest.mark.parametrize("limit", [1, 2])
async def test_max_connections_counts_open_sessions_only(limit: int) -> None:
    """Closed sessions free their slot: `limit` sequential messages all get in, twice over."""
    async with await start_inbox(max_connections=limit) as inbox:
        for number in range(limit * 2):
            code, _ = await send(inbox.port, message(f"n{number}"))
            assert code == 250
