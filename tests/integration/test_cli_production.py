"""`mailer send` with JSON logs, hooks named in settings and the staging redirect: real processes, real SMTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailer.testing import Mail, SMTPTestServer, TLSBundle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAILER = [sys.executable, "-m", "mailer"]
PASSWORD = "pa55-w0rd-xyz"

HOOKS = """
import dataclasses
from mailer import Refuse

SEEN = []

def stamp(message):
    if message.to[0].addr_spec == "zoe@example.test":
        return Refuse("zoe unsubscribed")
    return dataclasses.replace(message, headers=(*message.headers, ("X-Campaign", "welcome-2026")))

def record(message, result):
    with open("after.log", "a", encoding="utf-8") as log:
        log.write(f"{message.to[0].addr_spec} {result.status.value}\\n")

def broken(message, result):
    raise RuntimeError("the metrics database is down")
"""


def environment(
    tmp_path: Path, server: SMTPTestServer, tls: TLSBundle, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        MAILER_SMTP_HOST=server.host,
        MAILER_SMTP_PORT=str(server.port),
        MAILER_SMTP_TLS="starttls",
        MAILER_SMTP_CA_FILE=str(tls.ca_path),
        MAILER_SMTP_USERNAME="shop",
        MAILER_SMTP_PASSWORD=PASSWORD,
        MAILER_FROM="Example Shop <shop@example.test>",
        MAILER_TEMPLATES_DIR=str(EXAMPLES / "templates"),
        MAILER_RETRY_BACKOFF="0.01",
        MAILER_RETRY_MAX_BACKOFF="0.05",
        PYTHONPATH=str(tmp_path),
    )
    env.update(extra)
    return env


async def run_send(
    tmp_path: Path, env: dict[str, str], *options: str
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *MAILER,
        "send",
        "-t",
        "welcome",
        "-r",
        str(EXAMPLES / "recipients.csv"),
        *options,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.smtp_server(tls="starttls", require_starttls=True, auth={"shop": PASSWORD})
async def test_log_format_json_writes_one_record_per_message_and_no_secret(
    tmp_path: Path, smtp_server: SMTPTestServer, smtp_tls: TLSBundle
) -> None:
    """--log-format json: stderr is JSON lines, one outcome per message with its fields; no password, no body."""
    smtp_server.faults.reply(
        "RCPT", 550, "5.1.1 no such user", recipient="bob@example.test"
    )
    code, stdout, stderr = await run_send(
        tmp_path, environment(tmp_path, smtp_server, smtp_tls), "--log-format", "json"
    )
    assert code == 1
    assert "3 sent, 1 failed, 0 invalid (4 total)" in stdout
    records = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON
    outcomes = [r for r in records if r["logger"] == "mailer.outcome"]
    assert sorted(r["mail_status"] for r in outcomes) == [
        "failed",
        "sent",
        "sent",
        "sent",
    ]
    [failed] = [r for r in outcomes if r["mail_status"] == "failed"]
    assert (failed["level"], failed["reply_code"], failed["enhanced_status"]) == (
        "WARNING",
        550,
        "5.1.1",
    )
    for record in outcomes:
        assert record["relay"] == f"{smtp_server.host}:{smtp_server.port}"
        assert record["recipient_count"] == 1
        assert record["attempts"] == 1
        assert record["message_id"].startswith("<")
        assert record["ambiguous"] is False
        assert isinstance(record["duration"], float)
        assert record["time"].endswith("+00:00")
    for secret in (
        PASSWORD,
        "Thank you for joining",
        "Welcome to",
    ):  # password, body, subject
        assert secret not in stderr
    assert (
        "failed bob@" not in stderr
    )  # the human failure lines give way to the records


@pytest.mark.smtp_server(tls="starttls", require_starttls=True, auth={"shop": PASSWORD})
async def test_hooks_named_in_settings_run_in_the_cli(
    tmp_path: Path, smtp_server: SMTPTestServer, smtp_tls: TLSBundle
) -> None:
    """MAILER_BEFORE_SEND tags and refuses, MAILER_AFTER_SEND records; a broken after hook changes nothing."""
    (tmp_path / "shop_hooks.py").write_text(HOOKS, encoding="utf-8")
    env = environment(
        tmp_path,
        smtp_server,
        smtp_tls,
        MAILER_BEFORE_SEND="shop_hooks:stamp",
        MAILER_AFTER_SEND="shop_hooks:broken, shop_hooks:record",
    )
    code, stdout, stderr = await run_send(tmp_path, env, "--report", "report.jsonl")
    assert code == 1
    assert "3 sent, 1 failed, 0 invalid (4 total)" in stdout
    assert (
        "failed zoe@example.test: refused by shop_hooks.stamp: zoe unsubscribed"
        in stderr
    )
    assert "after 0 attempt(s)" not in stderr  # text mode: no outcome records
    smtp_server.outbox.assert_sent(
        Mail(headers={"X-Campaign": "welcome-2026"}), count=3
    )
    smtp_server.outbox.assert_not_sent(Mail(to="zoe@example.test"))
    recorded = sorted((tmp_path / "after.log").read_text(encoding="utf-8").splitlines())
    assert recorded == [
        "ann@example.test sent",
        "bob@example.test sent",
        "li.lei@example.test sent",
        "zoe@example.test failed",
    ]
    assert stderr.count("after_send hook shop_hooks.broken failed") == 4
    lines = [
        json.loads(line)
        for line in (tmp_path / "report.jsonl").read_text().splitlines()
    ]
    assert [line["status"] for line in lines if line["to"] == "zoe@example.test"] == [
        "failed"
    ]


@pytest.mark.smtp_server(tls="starttls", require_starttls=True, auth={"shop": PASSWORD})
async def test_redirect_to_in_the_cli(
    tmp_path: Path, smtp_server: SMTPTestServer, smtp_tls: TLSBundle
) -> None:
    """MAILER_REDIRECT_TO: all four rows arrive at the sandbox only, each with its original To in a header."""
    env = environment(
        tmp_path, smtp_server, smtp_tls, MAILER_REDIRECT_TO="sandbox@example.test"
    )
    code, stdout, _ = await run_send(tmp_path, env)
    assert code == 0, stdout
    received = smtp_server.outbox.assert_sent(
        Mail(rcpt_tos=["sandbox@example.test"]), count=4
    )
    assert sorted(mail.header("X-Mailer-Original-To") or "" for mail in received) == [
        "ann@example.test",
        "bob@example.test",
        "li.lei@example.test",
        "zoe@example.test",
    ]


async def test_bad_hook_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A hook that cannot be imported: one line naming the setting, exit 2, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        MAILER_FROM="shop@example.test",
        MAILER_TEMPLATES_DIR=str(EXAMPLES / "templates"),
        MAILER_BEFORE_SEND="no_such_hooks:stamp",
    )
    code, _, stderr = await run_send(tmp_path, env)
    assert code == 2
    [line] = stderr.splitlines()  # one line, no traceback
    assert line.startswith(
        "error: MAILER_BEFORE_SEND: cannot import no_such_hooks:stamp: "
        "No module named 'no_such_hooks'"
    )
