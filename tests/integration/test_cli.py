"""The `mailer` command as a user runs it: separate processes, real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mailer import Message, MessageClient
from mailer.config.settings import MailerSettings
from mailer.testing import Mail, SMTPTestServer, TLSBundle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAILER = [sys.executable, "-m", "mailer"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}


def test_demo_needs_no_configuration(tmp_path: Path) -> None:
    """`mailer demo` starts its own inbox, sends the examples, and all arrive."""
    result = subprocess.run(
        [*MAILER, "demo", "--dir", str(tmp_path / "inbox")],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "sent 4 of 4 messages over SMTP (0 failed)" in result.stdout
    assert "every example message arrived" in result.stdout
    saved = sorted((tmp_path / "inbox").glob("*.eml"))
    assert len(saved) == 4
    assert b"Subject: " in saved[0].read_bytes()


@pytest.mark.smtp_server(
    tls="starttls", require_starttls=True, auth={"shop": "pa55-w0rd"}
)
async def test_send_from_a_dotenv_with_starttls_and_auth(
    tmp_path: Path, smtp_server: SMTPTestServer, smtp_tls: TLSBundle
) -> None:
    """A user's .env for a STARTTLS + AUTH server: `mailer send` delivers every row."""
    (tmp_path / ".env").write_text(
        f"MAILER_SMTP_HOST={smtp_server.host}\nMAILER_SMTP_PORT={smtp_server.port}\nMAILER_SMTP_TLS=starttls\n"
        f"MAILER_SMTP_CA_FILE={smtp_tls.ca_path}\nMAILER_SMTP_USERNAME=shop\nMAILER_SMTP_PASSWORD=pa55-w0rd\n"
        f"MAILER_FROM=Example Shop <shop@example.test>\nMAILER_TEMPLATES_DIR={EXAMPLES / 'templates'}\n",
        encoding="utf-8",
    )
    process = await asyncio.create_subprocess_exec(
        *MAILER,
        "send",
        "--template",
        "welcome",
        "--recipients",
        str(EXAMPLES / "recipients.csv"),
        "--report",
        "report.jsonl",
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    received = smtp_server.outbox.assert_sent(
        Mail(tls="starttls", auth_username="shop"), count=4
    )
    assert process.returncode == 0, stderr.decode()
    assert "4 sent, 0 failed, 0 invalid (4 total)" in stdout.decode()
    assert "pa55-w0rd" not in stdout.decode() + stderr.decode()
    assert sorted(m.envelope.rcpt_tos[0] for m in received) == [
        "ann@example.test",
        "bob@example.test",
        "li.lei@example.test",
        "zoe@example.test",
    ]
    report = [
        json.loads(line)
        for line in (tmp_path / "report.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [line["status"] for line in report] == ["sent"] * 4
    assert {line["message_id"] for line in report} == {m.message_id for m in received}
    assert all(line["reply"]["code"] == 250 for line in report)


@pytest.mark.smtp_server(tls="starttls", auth={"shop": "right"})
async def test_send_reports_a_refused_login_in_one_line(
    tmp_path: Path, smtp_server: SMTPTestServer, smtp_tls: TLSBundle
) -> None:
    """A wrong password: exit 2 (configuration), the 535 reply shown, the password never printed."""
    env = clean_env() | {
        "MAILER_SMTP_HOST": smtp_server.host,
        "MAILER_SMTP_PORT": str(smtp_server.port),
        "MAILER_SMTP_TLS": "starttls",
        "MAILER_SMTP_CA_FILE": str(smtp_tls.ca_path),
        "MAILER_SMTP_USERNAME": "shop",
        "MAILER_SMTP_PASSWORD": "Wr0ng-Secret",
        "MAILER_FROM": "shop@example.test",
        "MAILER_TEMPLATES_DIR": str(EXAMPLES / "templates"),
    }
    process = await asyncio.create_subprocess_exec(
        *MAILER,
        "send",
        "-t",
        "welcome",
        "-r",
        str(EXAMPLES / "recipients.csv"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    # A refused login stops the batch: one login tried, the rest left pending.
    assert "0 sent, 1 failed, 3 pending" in stdout.decode()
    assert (
        "3 pending: not sent: stopped: every message would fail the same way: "
        in stderr.decode()
    )
    assert "check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD" in stderr.decode()
    assert (
        "refused the login: 535 5.7.8 Authentication credentials invalid"
        in stderr.decode()
    )
    assert "Wr0ng-Secret" not in stdout.decode() + stderr.decode()
    assert "Traceback" not in stderr.decode()
    smtp_server.outbox.assert_nothing_sent()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["SIGINT", "SIGTERM"],
)
async def test_inbox_command_saves_and_lists_each_message(
    tmp_path: Path,
    signum: signal.Signals,
    code: int,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """`mailer inbox` listens on loopback, prints a line per message, saves .eml.

    It stops on Ctrl-C or SIGTERM with 128 + the signal's number, even when
    started with SIGINT ignored (a background job).
    """
    process = await asyncio.create_subprocess_exec(
        *MAILER,
        "inbox",
        "--port",
        "0",
        "--http-port",
        "0",
        "--dir",
        str(tmp_path / "box"),
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As a shell starts a background job: Python then installs no
        # KeyboardInterrupt handler, so only the inbox's own handler can stop it.
        preexec_fn=_ignore_sigint,
    )
    try:
        assert process.stdout is not None
        banner = (
            await asyncio.wait_for(process.stdout.readline(), timeout=30)
        ).decode()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        settings = settings_for(int(match.group(1)), from_="dev@example.test")
        async with MessageClient(settings) as client:
            await client.send(
                Message(to="you@example.test", subject="Hello inbox", body="hi")
            )
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        assert "dev@example.test -> you@example.test: 'Hello inbox'" in line
        [saved] = (tmp_path / "box").glob("*.eml")
        assert b"Subject: Hello inbox" in saved.read_bytes()
    finally:
        process.send_signal(signum)
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == code
    assert "inbox stopped; 1 message(s) received" in stdout.decode()


def test_python_dash_m_mailer_shows_help() -> None:
    """`python -m mailer --help` lists the commands."""
    result = subprocess.run(
        [*MAILER, "--help"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for command in ("send", "preview", "demo", "inbox"):
        assert command in result.stdout
