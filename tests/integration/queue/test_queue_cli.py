"""`mailer queue init`, `send --queue`, `worker` and `status` as processes."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from mailer.testing import END_OF_DATA, SMTPTestServer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MAILER = [sys.executable, "-m", "mailer"]


def environment(dsn: str, server: SMTPTestServer | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        {
            "MAILER_QUEUE_DSN": dsn,
            "MAILER_FROM": "shop@example.test",
            "MAILER_TEMPLATES_DIR": str(EXAMPLES / "templates"),
            "MAILER_QUEUE_HEARTBEAT": "1",
            "MAILER_RETRY_BACKOFF": "0.01",
        }
    )
    if server is not None:
        env.update(
            MAILER_SMTP_HOST=server.host,
            MAILER_SMTP_PORT=str(server.port),
            MAILER_SMTP_TLS="none",
        )
    return env


def write_recipients(path: Path, count: int, bad_line: int | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            email = "not an address" if n + 2 == bad_line else f"user{n}@example.test"
            writer.writerow([email, f"User {n}", f"C-{n}", "pro"])
    return path


async def mailer(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *MAILER, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def count(dsn: str, sql: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        row = await (await c.execute(sql.encode())).fetchone()
        assert row is not None
        return int(row[0])


async def test_queue_init_creates_the_tables_once_and_says_so(
    empty_database: str,
) -> None:
    """First run creates both schemas; the second has nothing to do; exit 0 both."""
    env = environment(empty_database)
    first = await mailer(env, "queue", "init")
    second = await mailer(env, "queue", "init")
    assert first[0] == second[0] == 0
    assert "created procrastinate's schema" in first[1]
    assert "applied mailer migration 1" in first[1]
    assert "applied mailer migration 2: rate limits shared by the workers" in first[1]
    assert "applied mailer migration 3: each message's Date and bytes" in first[1]
    assert second[1].strip() == "queue ready: mailer schema version 3 (nothing to do)"


async def test_a_bad_row_enqueues_nothing_and_exits_2(
    tmp_path: Path, queue_database: str
) -> None:
    """Rows are checked first, exactly as without --queue: one bad row, nothing queued."""
    recipients = write_recipients(tmp_path / "r.csv", 5, bad_line=4)
    code, _, stderr = await mailer(
        environment(queue_database),
        "send",
        "-t",
        "welcome",
        "-r",
        str(recipients),
        "--queue",
    )
    assert code == 2
    assert "line 4:" in stderr
    assert "nothing was sent" in stderr
    assert "Traceback" not in stderr
    assert await count(queue_database, "SELECT count(*) FROM mailer_messages") == 0
    assert await count(queue_database, "SELECT count(*) FROM procrastinate_jobs") == 0


async def test_send_queue_splits_into_jobs_and_status_follows_the_batch(
    tmp_path: Path, queue_database: str
) -> None:
    """--job-size 4 makes 3 jobs of 10 rows; status is 'in progress' (exit 1), then complete."""
    recipients = write_recipients(tmp_path / "r.csv", 10)
    async with SMTPTestServer() as server:
        env = environment(queue_database, server)
        code, stdout, _ = await mailer(
            env, "send", "-t", "welcome", "-r", str(recipients), "--queue",
            "--job-size", "4",
        )  # fmt: skip
        assert code == 0
        assert "batch 1: 10 message(s) enqueued in 3 job(s)" in stdout
        assert "mailer status --batch 1" in stdout
        code, status, _ = await mailer(env, "status", "--batch", "1")
        assert code == 1
        assert "10 pending" in status
        assert "in progress: 10 message(s) to go" in status
        assert "jobs: 3 todo" in status

        worker = await asyncio.create_subprocess_exec(
            *MAILER, "worker", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        await server.outbox.wait_for(count=10, timeout=30)
        while await count(  # noqa: ASYNC110 - the database has no event for it
            queue_database,
            "SELECT count(*) FROM mailer_messages WHERE state <> 'sent'",
        ):
            await asyncio.sleep(0.05)
        code, status, _ = await mailer(env, "status", "--batch", "1")
        everything = await mailer(env, "status", "--queue")
        missing = await mailer(env, "status", "--batch", "7")
        worker.send_signal(signal.SIGINT)
        stdout_bytes, _ = await asyncio.wait_for(worker.communicate(), 60)
    assert code == 0, status
    assert "10 sent" in status
    assert "complete: every message was sent" in status
    assert everything[0] == 0
    assert "queue: 10 message(s)" in everything[1]
    assert missing[0] == 2
    assert missing[2].strip() == "error: --batch 7: no such batch in the queue"
    assert worker.returncode == 130
    assert "worker stopped; every outcome is recorded" in stdout_bytes.decode()
    assert len(server.outbox) == 10


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143)])
async def test_sigterm_finishes_the_transactions_in_flight_and_requeues_the_rest(
    tmp_path: Path, queue_database: str, signum: int, code: int
) -> None:
    """Stopped mid-batch: exit 143, nothing left 'sending', the rest back in the queue."""
    recipients = write_recipients(tmp_path / "r.csv", 40)
    async with SMTPTestServer() as server:
        env = environment(queue_database, server)
        env["MAILER_CONCURRENCY"] = "2"
        slow = server.faults.delay(END_OF_DATA, 0.2)
        await mailer(env, "send", "-t", "welcome", "-r", str(recipients), "--queue")
        worker = await asyncio.create_subprocess_exec(
            *MAILER, "worker", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        await server.outbox.wait_for(count=3, timeout=30)
        worker.send_signal(signum)
        _, stderr = await asyncio.wait_for(worker.communicate(), 60)
        assert worker.returncode == code, stderr.decode()
        assert "SIGTERM: stopping; no new job starts" in stderr.decode()
        arrived = len(server.outbox)
        assert arrived < 40
        assert (
            await count(
                queue_database,
                "SELECT count(*) FROM mailer_messages WHERE state = 'sending'",
            )
            == 0
        )
        assert (
            await count(
                queue_database,
                "SELECT count(*) FROM mailer_messages WHERE state = 'sent'",
            )
            == arrived
        )
        assert (
            await count(
                queue_database,
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'",
            )
            == 0
        )
        # Another worker takes what is left; nobody gets a message twice.
        slow.disarm()
        second = await asyncio.create_subprocess_exec(
            *MAILER, "worker", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        await server.outbox.wait_for(count=40, timeout=60)
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.communicate(), 60)
    ids = [mail.message["Message-ID"] for mail in server.outbox]
    assert len(set(ids)) == len(ids) == 40


async def test_no_command_prints_the_queue_password(
    tmp_path: Path, queue_database: str
) -> None:
    """The DSN is a secret: not in errors (wrong port, no schema) nor in status."""
    password = urlsplit(queue_database).password
    assert password
    unreachable = queue_database.replace(
        f":{urlsplit(queue_database).port}/", f":{_closed_port()}/"
    )
    outputs: list[Any] = []
    for dsn in (queue_database, unreachable):
        env = environment(dsn)
        outputs.append(await mailer(env, "status", "--queue"))
        outputs.append(await mailer(env, "queue", "init"))
    env = environment(unreachable)
    outputs.append(await mailer(env, "worker"))
    recipients = write_recipients(tmp_path / "r.csv", 2)
    outputs.append(
        await mailer(env, "send", "-t", "welcome", "-r", str(recipients), "--queue")
    )
    for _, stdout, stderr in outputs:
        assert password not in stdout + stderr
    failures = outputs[2:4] + outputs[4:]
    for code, _, stderr in failures:
        assert code == 2, stderr
        assert "cannot be reached (MAILER_QUEUE_DSN)" in stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert "Traceback" not in stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
