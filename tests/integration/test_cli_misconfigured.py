"""`mailer send` against a server it is misconfigured for: one attempt, exit 2, the setting named.

Each case is a mistake an operator makes in `.env` (issue 12.6): a port where
nothing listens, a server that requires STARTTLS while `.env` says `none`, an
implicit-TLS port while `.env` says plain. Before, every message was tried
MAILER_MAX_ATTEMPTS times and failed; now the batch stops after the first
attempt, the rest are pending, and the last line says which key to change.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailer.inbox.server import start_inbox
from mailer.testing import SMTPTestServer

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLES = REPOSITORY / "examples"
MAILER = [sys.executable, "-m", "mailer"]


def base_env(**keys: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env |= {
        "MAILER_FROM": "Example Shop <shop@example.test>",
        "MAILER_TEMPLATES_DIR": str(EXAMPLES / "templates"),
        # The defaults a user has: five attempts each, backoff from 1 s.
        "MAILER_MAX_ATTEMPTS": "5",
    }
    return env | {f"MAILER_{key.upper()}": value for key, value in keys.items()}


async def send(tmp_path: Path, env: dict[str, str]) -> tuple[int, str, str, list]:
    """Run `mailer send` on the four example rows with a report; return all it said."""
    process = await asyncio.create_subprocess_exec(
        *MAILER,
        "send",
        "-t",
        "welcome",
        "-r",
        str(EXAMPLES / "recipients.csv"),
        "--report",
        "report.jsonl",
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    report = [
        json.loads(line)
        for line in (tmp_path / "report.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return process.returncode, stdout.decode(), stderr.decode(), report


def assert_stopped_after_one_attempt(
    code: int, stdout: str, stderr: str, report: list, hint: str
) -> None:
    assert code == 2, stderr
    assert "0 sent, 1 failed, 3 pending, 0 invalid (4 total)" in stdout
    assert [line["status"] for line in report].count("pending") == 3
    [failed] = [line for line in report if line["status"] == "failed"]
    assert failed["attempts"] == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("3 pending: not sent: stopped: every message would fail")
    assert hint in last
    assert "Traceback" not in stderr


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_port_where_nothing_listens_stops_at_once(tmp_path: Path) -> None:
    """Connection refused: one attempt (not 4 x 5), exit 2, check HOST and PORT."""
    started = time.monotonic()
    result = await send(
        tmp_path, base_env(smtp_host="127.0.0.1", smtp_port=str(free_port()))
    )
    assert_stopped_after_one_attempt(
        *result, hint="check MAILER_SMTP_HOST and MAILER_SMTP_PORT"
    )
    # Five attempts with backoff for each message would take several seconds.
    assert time.monotonic() - started < 30


@pytest.mark.smtp_server(tls="starttls", require_starttls=True)
async def test_a_server_requiring_starttls_while_env_says_none(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    """530 Must issue a STARTTLS command first: one MAIL FROM, then set MAILER_SMTP_TLS=starttls."""
    result = await send(
        tmp_path,
        base_env(
            smtp_host=smtp_server.host, smtp_port=str(smtp_server.port), smtp_tls="none"
        ),
    )
    assert_stopped_after_one_attempt(*result, hint="set MAILER_SMTP_TLS=starttls")
    assert "530" in result[2]
    smtp_server.outbox.assert_nothing_sent()


@pytest.mark.smtp_server(tls="tls")
async def test_an_implicit_tls_port_while_env_says_plain(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    """No greeting (the server waits for a TLS hello): one attempt, check PORT and TLS."""
    result = await send(
        tmp_path,
        base_env(
            smtp_host=smtp_server.host,
            smtp_port=str(smtp_server.port),
            smtp_tls="none",
            greeting_timeout="1",
        ),
    )
    assert_stopped_after_one_attempt(
        *result, hint="check MAILER_SMTP_PORT and MAILER_SMTP_TLS"
    )


# What a user changes in .env when a line says so: the hint, then the edit.
FIXES = {
    "check MAILER_SMTP_HOST and MAILER_SMTP_PORT": "point",
    "set MAILER_SMTP_TLS=none": "MAILER_SMTP_TLS=none",
    "leave MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD empty": "no login",
}


async def test_a_new_env_from_the_example_reaches_the_dev_inbox_by_following_the_errors(
    tmp_path: Path,
) -> None:
    """.env.example copied as is, pointed at `mailer inbox`: each error names the key to change, and the batch then goes out."""
    env_text = (REPOSITORY / ".env.example").read_text(encoding="utf-8")
    env_text = env_text.replace(
        "MAILER_TEMPLATES_DIR=examples/templates",
        f"MAILER_TEMPLATES_DIR={EXAMPLES / 'templates'}",
    )
    dotenv = tmp_path / ".env"
    dotenv.write_text(env_text, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    async with await start_inbox() as inbox:

        def edit(fix: str) -> None:
            lines = dotenv.read_text(encoding="utf-8").splitlines()
            changes = {
                "point": {
                    "MAILER_SMTP_HOST": inbox.host,
                    "MAILER_SMTP_PORT": str(inbox.port),
                },
                "MAILER_SMTP_TLS=none": {"MAILER_SMTP_TLS": "none"},
                "no login": {"MAILER_SMTP_USERNAME": "", "MAILER_SMTP_PASSWORD": ""},
            }[fix]
            for index, line in enumerate(lines):
                key = line.split("=", 1)[0]
                if key in changes:
                    lines[index] = f"{key}={changes[key]}"
            dotenv.write_text("\n".join(lines) + "\n", encoding="utf-8")

        followed = []
        for _ in range(len(FIXES) + 1):
            code, stdout, stderr, _ = await send(tmp_path, clean)
            if code == 0:
                break
            assert code == 2, stderr
            last = stderr.strip().splitlines()[-1]
            assert f"(settings from {dotenv} and the environment)" in last
            hints = [hint for hint in FIXES if hint in last]
            assert hints, f"no setting to change in: {last}"
            followed.append(hints[0])
            assert len(inbox.messages) == 0
            edit(FIXES[hints[0]])
        assert code == 0, stderr
        assert "4 sent, 0 failed, 0 invalid (4 total)" in stdout
        assert len(inbox.messages) == 4
    assert followed == list(FIXES)
