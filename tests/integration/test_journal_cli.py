"""`mailer send --journal` as a process: SIGINT/SIGTERM, a second Ctrl-C, and resuming."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mailer.bulk.journal import JournalState
from mailer.bulk.status import journal_status
from mailer.testing import END_OF_DATA, SMTPTestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAILER = [sys.executable, "-m", "mailer"]
ROWS = 12


def write_recipients(path: Path, count: int = ROWS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            writer.writerow([f"user{n}@example.test", f"User {n}", f"C-{n}", "pro"])
    return path


def environment(server: SMTPTestServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        {
            "MAILER_SMTP_HOST": server.host,
            "MAILER_SMTP_PORT": str(server.port),
            "MAILER_SMTP_TLS": "none",
            "MAILER_FROM": "shop@example.test",
            "MAILER_TEMPLATES_DIR": str(EXAMPLES / "templates"),
            "MAILER_RETRY_BACKOFF": "0.01",
            "MAILER_CONCURRENCY": "2",
        }
    )
    env.update(extra)
    return env


async def start_send(
    tmp_path: Path, server: SMTPTestServer, **extra: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *MAILER,
        "send",
        "-t",
        "welcome",
        "-r",
        str(tmp_path / "recipients.csv"),
        "--journal",
        str(tmp_path / "batch.journal"),
        cwd=tmp_path,
        env=environment(server, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll server-side state (no event to await for it)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
async def test_a_signal_stops_the_batch_and_the_same_command_resumes_it(
    tmp_path: Path, signum: int, code: int
) -> None:
    """Stopped part-way: exit 130/143, the rest pending; the rerun sends each once."""
    write_recipients(tmp_path / "recipients.csv")
    async with SMTPTestServer() as server:
        slow = server.faults.delay(END_OF_DATA, 0.1)
        process = await start_send(tmp_path, server)
        await wait_for(lambda: len(server.outbox) >= 2)
        process.send_signal(signum)
        returncode, stdout, stderr = await finish(process)
        assert returncode == code
        assert f"{signal.Signals(signum).name}: stopping" in stderr
        assert "pending" in stdout
        assert "stopped: run the same command to resume" in stdout
        status = journal_status(tmp_path / "batch.journal")
        assert status.counts[JournalState.SENDING] == 0  # in-flight ones finished
        assert status.counts[JournalState.SENT] == len(server.outbox) < ROWS
        assert status.counts[JournalState.PENDING] == ROWS - len(server.outbox)

        slow.disarm()
        returncode, stdout, _ = await finish(await start_send(tmp_path, server))
    assert returncode == 0, stdout
    assert "resumed:" in stdout
    ids = [mail.message["Message-ID"] for mail in server.outbox]
    assert len(ids) == ROWS
    assert len(set(ids)) == ROWS  # nobody got it twice
    assert journal_status(tmp_path / "batch.journal").is_complete


async def test_a_second_ctrl_c_quits_at_once_and_the_journal_still_resumes(
    tmp_path: Path,
) -> None:
    """Ctrl-C twice during a hung transaction: out in well under the grace period."""
    write_recipients(tmp_path / "recipients.csv", count=3)
    async with SMTPTestServer() as server:
        hang = server.faults.delay(END_OF_DATA, 60)
        process = await start_send(tmp_path, server, MAILER_SHUTDOWN_GRACE="60")
        await wait_for(lambda: hang.fired >= 1)
        process.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        process.send_signal(signal.SIGINT)
        returncode, _, stderr = await finish(process)
        assert returncode == 130
        assert "SIGINT again: quitting now" in stderr
        status = journal_status(tmp_path / "batch.journal")
        # The attempt cut short is still 'sending': a resume treats it as ambiguous.
        assert status.counts[JournalState.SENDING] == 1
        assert status.counts[JournalState.PENDING] == 2

        hang.disarm()
        returncode, stdout, _ = await finish(await start_send(tmp_path, server))
    assert returncode == 0, stdout
    assert "1 in flight when the last run ended" in stdout
    assert "1 ambiguous" in stdout
    assert len(server.outbox) == 3
