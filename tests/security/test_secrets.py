"""The SMTP password never shows: not in output, logs at DEBUG, reports, errors or reprs.

Each test greps every channel it can reach for the password and for the two
forms it takes on the wire (base64 of ``\\0user\\0password`` for AUTH PLAIN,
base64 of the password for AUTH LOGIN), after a failed login and after a
successful batch. The test server's own log (``mail.log``, aiosmtpd) is left
out: it is the server's, and at DEBUG it prints every line it receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from mailer import AuthenticationError, Message, MessageClient, send_messages
from mailer.bulk.recipients import RecipientFile
from mailer.config.secrets import secret_forms

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
USER = "shop"
PASSWORD = "Pa55-w0rd-only-the-server-knows"
WRONG = "wr0ng-Pa55-but-still-secret"
SECRETS = [*secret_forms(USER, PASSWORD), *secret_forms(USER, WRONG)]
# Log records a DEBUG run makes; ours and our libraries', not the test server's.
SERVER_LOGGER = "mail.log"

# The CLI, with every logger at DEBUG writing to stderr.
DEBUG_CLI = [
    sys.executable,
    "-c",
    "import logging, sys; logging.basicConfig(level=logging.DEBUG); "
    "from mailer.cli.app import main; sys.argv[0] = 'mailer'; main()",
]


def assert_no_secret(text: str, channel: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a password form leaked into {channel}"


def write_env(folder: Path, port: int, ca_file: Path, password: str) -> None:
    (folder / ".env").write_text(
        f"MAILER_SMTP_HOST=127.0.0.1\nMAILER_SMTP_PORT={port}\n"
        f"MAILER_SMTP_TLS=starttls\nMAILER_SMTP_CA_FILE={ca_file}\n"
        f"MAILER_SMTP_USERNAME={USER}\nMAILER_SMTP_PASSWORD={password}\n"
        "MAILER_FROM=Example Shop <shop@example.test>\n"
        f"MAILER_TEMPLATES_DIR={EXAMPLES / 'templates'}\nMAILER_TIMEOUT=5\n",
        encoding="utf-8",
    )


async def run_cli(folder: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *DEBUG_CLI,
        *args,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.parametrize(("password", "exit_code"), [(WRONG, 2), (PASSWORD, 0)])
async def test_the_cli_never_prints_or_reports_the_password(
    watched_server,
    tmp_path: Path,
    password: str,
    exit_code: int,
) -> None:
    """`mailer send` at DEBUG, failed login and good batch: stdout, stderr, report are clean."""
    async with watched_server(tls="starttls", auth={USER: PASSWORD}) as server:
        assert server.tls_bundle is not None
        write_env(tmp_path, server.port, server.tls_bundle.ca_path, password)
        code, stdout, stderr = await run_cli(
            tmp_path,
            "send",
            "--template",
            "welcome",
            "--recipients",
            str(EXAMPLES / "recipients.csv"),
            "--report",
            "report.jsonl",
        )
    assert code == exit_code, stderr
    report = (tmp_path / "report.jsonl").read_text(encoding="utf-8")
    statuses = [json.loads(line)["status"] for line in report.splitlines()]
    # A refused login stops the batch (one login tried): the rest are pending.
    expected = ["failed", *["pending"] * 3] if password == WRONG else ["sent"] * 4
    assert statuses == expected
    assert "DEBUG" in stderr  # the logging really was on
    if password == WRONG:
        assert "535" in stderr + report
    assert server.commands.count("AUTH") >= 1
    for transcript in server.transcripts:
        assert_no_secret("\n".join(transcript), "the server's transcript")
    for text, channel in ((stdout, "stdout"), (stderr, "stderr"), (report, "report")):
        assert_no_secret(text, channel)


async def test_a_settings_error_in_the_cli_never_echoes_the_password(
    tmp_path: Path,
) -> None:
    """A typo'd key next to the password: exit 2, the key named, no password anywhere."""
    (tmp_path / ".env").write_text(
        f"MAILER_SMTP_USERNAME={USER}\nMAILER_SMTP_PASSWORD={PASSWORD}\n"
        f"MAILER_SMTP_PASSWROD={WRONG}\n",
        encoding="utf-8",
    )
    (tmp_path / "rows.csv").write_text("email\na@example.test\n", encoding="utf-8")
    code, stdout, stderr = await run_cli(
        tmp_path, "send", "--template", "welcome", "--recipients", "rows.csv"
    )
    assert code == 2
    assert "MAILER_SMTP_PASSWROD: unknown setting" in stderr
    assert_no_secret(stdout + stderr, "the CLI's output")


async def test_in_process_logs_errors_results_and_reprs_never_hold_the_password(
    watched_server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The library at DEBUG: failed login then a good batch; every record, error, result and repr is clean."""
    caplog.set_level(logging.DEBUG)
    channels: list[tuple[str, str]] = []
    async with watched_server(tls="starttls", auth={USER: PASSWORD}) as server:
        wrong = server.settings(smtp_password=WRONG)
        channels += [("repr(settings)", repr(wrong)), ("str(settings)", str(wrong))]
        channels.append(("settings.model_dump_json()", wrong.model_dump_json()))
        async with MessageClient(wrong) as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.send(Message(to="a@example.test", subject="s", body="b"))
            failed = await client.send_many(
                [Message(to="b@example.test", subject="s", body="b")]
            )
        error = caught.value
        channels += [
            ("str(error)", str(error)),
            ("repr(error)", repr(error)),
            ("repr(error.__cause__)", repr(error.__cause__)),
            ("traceback", "".join(traceback.format_exception(error))),
            ("failed result", repr(failed) + json.dumps(failed[0].to_report())),
        ]
        right = server.settings()
        report = await send_messages(
            "welcome",
            RecipientFile(EXAMPLES / "recipients.csv"),
            settings=right.model_copy(update={"templates_dir": EXAMPLES / "templates"}),
        )
    assert report.sent == 4
    assert failed[0].reply is not None
    assert failed[0].reply.code == 535
    channels.append(("batch report", repr(report) + report.summary()))
    channels += [("result report", json.dumps([r.to_report() for r in report.results]))]
    ours = [r for r in caplog.records if not r.name.startswith(SERVER_LOGGER)]
    outcomes = [r for r in ours if r.name == "mailer.outcome"]
    assert len(outcomes) == 2 + 4  # one structured record per message
    channels.append(("log records", "\n".join(r.getMessage() for r in ours)))
    channels.append(("log record fields", "\n".join(repr(vars(r)) for r in ours)))
    channels.append(("log arguments", "\n".join(repr(r.args) for r in ours)))
    for channel, text in channels:
        assert_no_secret(text, channel)


async def test_a_server_that_echoes_the_password_is_redacted(watched_server) -> None:
    """535 replies that quote the password (plain or base64) reach the user redacted."""
    plain_b64 = base64.b64encode(f"\0{USER}\0{WRONG}".encode()).decode()
    login_b64 = base64.b64encode(WRONG.encode()).decode()
    async with watched_server(tls="starttls", auth={USER: PASSWORD}) as server:
        # A careless server that quotes what it was sent.
        server.faults.reply(
            "AUTH", 535, f"5.7.8 bad password {WRONG} ({plain_b64}, {login_b64})"
        )
        async with MessageClient(server.settings(smtp_password=WRONG)) as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.send(Message(to="a@example.test", subject="s", body="b"))
    message = str(caught.value)
    assert "bad password [redacted] ([redacted], [redacted])" in message
    assert_no_secret(message, "the error")
    assert_no_secret(repr(caught.value.__cause__), "the chained aiosmtplib error")
    assert caught.value.reply is not None
    assert_no_secret(caught.value.reply.text, "the reply")


async def test_replies_quoting_the_password_after_login_are_redacted_in_the_cli(
    watched_server, tmp_path: Path
) -> None:
    """A server quoting it at MAIL FROM (plain, unpadded base64, split over two lines): output and report clean."""
    plain_b64 = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    login_b64 = base64.b64encode(PASSWORD.encode()).decode().rstrip("=")
    half = len(login_b64) // 2
    async with watched_server(tls="starttls", auth={USER: PASSWORD}) as server:
        assert server.tls_bundle is not None
        rule = server.faults.reply(
            "MAIL",
            550,
            f"5.7.1 you are {USER} with {PASSWORD}\n"
            f"5.7.1 sent {plain_b64.rstrip('=')} and {login_b64[:half]}\n"
            f"5.7.1 {login_b64[half:]}",
        )
        write_env(tmp_path, server.port, server.tls_bundle.ca_path, PASSWORD)
        code, stdout, stderr = await run_cli(
            tmp_path,
            "send",
            "--template",
            "welcome",
            "--recipients",
            str(EXAMPLES / "recipients.csv"),
            "--report",
            "report.jsonl",
        )
    assert rule.fired >= 1
    assert code == 1, stderr
    report = (tmp_path / "report.jsonl").read_text(encoding="utf-8")
    lines = [json.loads(line) for line in report.splitlines()]
    assert {line["status"] for line in lines} == {"failed"}
    assert "[redacted]" in lines[0]["reply"]["text"]
    assert "[redacted]" in lines[0]["error"]
    assert "[redacted]" in stderr
    for text, channel in ((stdout, "stdout"), (stderr, "stderr"), (report, "report")):
        assert_no_secret(text, channel)
        for piece in (login_b64[:half], login_b64[half:]):
            assert piece not in text, f"half of the split form leaked into {channel}"
