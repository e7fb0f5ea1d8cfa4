"""`mailer send` as a separate process: signals, a closed stdout, the SMTP dialogue.

Real processes, real signals and pipes, a real SMTP server on 127.0.0.1 (issues
11.11, 11.12 and 12.11).
"""

from __future__ import annotations

import asyncio
import base64
import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailer.testing import SMTPTestServer, TLSBundle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAILER = [sys.executable, "-m", "mailer"]
PASSWORD = "Dialogue-Secret-77"


def env_for(server: SMTPTestServer, **keys: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env |= {
        "MAILER_SMTP_HOST": server.host,
        "MAILER_SMTP_PORT": str(server.port),
        "MAILER_FROM": "Example Shop <shop@example.test>",
        "MAILER_TEMPLATES_DIR": str(EXAMPLES / "templates"),
    }
    return env | {f"MAILER_{key.upper()}": value for key, value in keys.items()}


def rows_file(folder: Path, count: int) -> Path:
    path = folder / "rows.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            writer.writerow([f"user{n}@example.test", f"User {n}", f"C-{n}", "pro"])
    return path


async def start(
    tmp_path: Path, env: dict[str, str], *args: str, stdout: int = subprocess.PIPE
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *MAILER,
        "send",
        *args,
        cwd=tmp_path,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


@pytest.mark.smtp_server(tls=None)
async def test_sighup_stops_the_batch_like_sigterm(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    """SIGHUP (a closed terminal): in-flight messages end, the summary is printed, exit 129 (it killed the process at once)."""
    smtp_server.faults.delay("DATA", 0.3)
    rows = rows_file(tmp_path, 40)
    process = await start(
        tmp_path,
        env_for(smtp_server, shutdown_grace="10", concurrency="2"),
        "-t",
        "welcome",
        "-r",
        str(rows),
        "--report",
        "report.jsonl",
    )
    await smtp_server.outbox.wait_for(count=1, timeout=60)
    process.send_signal(signal.SIGHUP)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 129, stderr.decode()
    summary = re.search(
        r"(\d+) sent, 0 failed, (\d+) pending, 0 invalid \(40 total\)", stdout.decode()
    )
    assert summary is not None, stdout.decode() + stderr.decode()
    sent, pending = map(int, summary.groups())
    assert sent == len(smtp_server.outbox)
    assert pending > 0
    assert "SIGHUP: stopping" in stderr.decode()
    lines = (tmp_path / "report.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 40


async def test_a_closed_stdout_changes_neither_the_result_nor_the_exit_code(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    """Its reader gone before the first line (`| head -0`): every message sent, exit 0, no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        process = await start(
            tmp_path,
            env_for(smtp_server),
            "-t",
            "welcome",
            "-r",
            str(EXAMPLES / "recipients.csv"),
            "--report",
            "report.jsonl",
            stdout=write_end,
        )
    finally:
        os.close(write_end)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert "BrokenPipeError" not in stderr.decode()
    assert len(smtp_server.outbox) == 4
    report = (tmp_path / "report.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(report) == 4


async def test_ctrl_c_during_the_check_pass_stops_it(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    """SIGINT while 100,000 rows are checked: it stops within seconds, nothing sent, exit 130 (it was ignored until the check ended)."""
    rows = rows_file(tmp_path, 100_000)
    process = await start(
        tmp_path, env_for(smtp_server), "-v", "-t", "welcome", "-r", str(rows)
    )
    assert process.stderr is not None
    first = await asyncio.wait_for(process.stderr.readline(), timeout=60)
    assert first.startswith(b"settings from the environment only")
    await asyncio.sleep(0.5)  # the check pass has begun: it takes many seconds
    signalled = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, rest = await asyncio.wait_for(process.communicate(), timeout=120)
    took = time.monotonic() - signalled
    assert process.returncode == 130, rest.decode()
    assert "SIGINT: stopping the check pass; nothing was sent" in rest.decode()
    assert "stopped during the check pass" in rest.decode()
    assert took < 20, took
    assert stdout == b""
    smtp_server.outbox.assert_nothing_sent()


@pytest.mark.smtp_server(tls="starttls", auth={"shop": PASSWORD})
async def test_verbose_shows_the_dialogue_with_auth_hidden(
    tmp_path: Path, smtp_server: SMTPTestServer, smtp_tls: TLSBundle
) -> None:
    """-v: every command and reply, one message sent alone and a pipelined batch; no form of the password."""
    env = env_for(
        smtp_server,
        smtp_tls="starttls",
        smtp_ca_file=str(smtp_tls.ca_path),
        smtp_username="shop",
        smtp_password=PASSWORD,
    )
    one = await start(
        tmp_path,
        env,
        "-v",
        "--to",
        "ann@example.test",
        "--subject",
        "Config check",
        "--text",
        "It works.",
    )
    out_one, err_one = await asyncio.wait_for(one.communicate(), timeout=60)
    batch = await start(
        tmp_path, env, "-v", "-t", "welcome", "-r", str(EXAMPLES / "recipients.csv")
    )
    _, err_batch = await asyncio.wait_for(batch.communicate(), timeout=60)
    assert one.returncode == 0, err_one.decode()
    assert batch.returncode == 0, err_batch.decode()
    assert out_one.decode().startswith("sent to ann@example.test: 250 ")
    for dialogue in (err_one.decode(), err_batch.decode()):
        assert re.search(r"^smtp 127\.0\.0\.1:\d+#\d+ S: 220 ", dialogue, re.M)
        assert " C: STARTTLS" in dialogue
        assert re.search(r" C: AUTH (PLAIN|LOGIN) \[hidden\]$", dialogue, re.M)
        assert " S: 235 " in dialogue
        assert " C: MAIL FROM:<shop@example.test>" in dialogue
        assert "(message content, " in dialogue
        for secret in (
            PASSWORD,
            base64.b64encode(f"\0shop\0{PASSWORD}".encode()).decode().rstrip("="),
            base64.b64encode(PASSWORD.encode()).decode().rstrip("="),
        ):
            assert secret not in dialogue
    assert err_batch.decode().count(" C: RCPT TO:<") == 4


async def test_a_report_on_a_full_disk_stops_a_real_batch_without_hanging(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    """--report /dev/full over real SMTP lanes: the batch stops, no hang, exit 2, the journal agrees with the summary (issue 11.10)."""
    rows = rows_file(tmp_path, 300)
    process = await start(
        tmp_path,
        env_for(smtp_server),
        "-t",
        "welcome",
        "-r",
        str(rows),
        "--report",
        "/dev/full",
        "--journal",
        "batch.db",
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 2, stderr.decode()
    summary = re.search(
        r"(\d+) sent, 0 failed, (\d+) pending, 0 invalid \(300 total\)",
        stdout.decode(),
    )
    assert summary is not None, stdout.decode() + stderr.decode()
    sent, pending = map(int, summary.groups())
    assert sent == len(smtp_server.outbox)
    assert pending > 0
    assert "could not be written: No space left on device" in stderr.decode()
    status = await asyncio.create_subprocess_exec(
        *MAILER,
        "status",
        "--journal",
        "batch.db",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
    )
    said, _ = await asyncio.wait_for(status.communicate(), timeout=60)
    assert f"{pending} pending, 0 sending, {sent} sent, 0 failed" in said.decode()
