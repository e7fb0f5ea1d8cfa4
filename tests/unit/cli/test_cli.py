"""The mailer command line, in-process: exit codes, reports, one-line errors.

The CLI sends through generate_message_client(), so the toolkit's mail_outbox
and mock_send fixtures stand in for the SMTP server here.
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import AsyncMock

import pytest
from typer.testing import CliRunner

from mailer import Message, RecipientsRefusedError, Reply
from mailer.cli.app import app
from mailer.testing import Addr, Outbox

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RECIPIENTS = str(EXAMPLES / "recipients.csv")
runner = CliRunner()


# Configured through the environment, as a user would set it.
pytestmark = pytest.mark.usefixtures("configured_environment")


def test_send_delivers_every_row_and_writes_the_report(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """`mailer send` exits 0, prints a summary and writes one report line per message."""
    report = tmp_path / "report.jsonl"
    result = runner.invoke(
        app,
        [
            "send",
            "--template",
            "welcome",
            "--recipients",
            RECIPIENTS,
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 sent, 0 failed, 0 invalid (4 total)" in result.stdout
    mail_outbox.assert_sent_count(4)
    lines = [
        json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()
    ]
    assert [line["to"] for line in lines] == [
        "ann@example.test",
        "bob@example.test",
        "li.lei@example.test",
        "zoe@example.test",
    ]
    assert {line["status"] for line in lines} == {"sent"}
    assert lines[0]["reply"]["code"] == 250
    assert lines[0]["message_id"].startswith("<")
    assert lines[0]["message_id"].endswith("@example.test>")


def test_a_failed_message_makes_exit_code_1(
    mock_send: AsyncMock, mail_outbox: Outbox, tmp_path: Path
) -> None:
    """One refused message: exit 1, the failure on stderr and in the report."""
    refusal = Reply(550, "5.1.1 no such user")

    def refuse_bob(message: Message) -> None:
        if Addr("bob@example.test") == message.to:
            raise RecipientsRefusedError(
                "refused bob@example.test: 550 5.1.1 no such user",
                refused={"bob@example.test": refusal},
                reply=refusal,
            )

    mock_send.side_effect = refuse_bob
    report = tmp_path / "r.jsonl"
    result = runner.invoke(
        app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--report", str(report)]
    )
    assert result.exit_code == 1
    assert mock_send.await_count == 4
    mail_outbox.assert_sent_count(3)
    mail_outbox.assert_not_sent(to="bob@example.test")
    assert "3 sent, 1 failed" in result.stdout
    assert "failed bob@example.test: refused bob@example.test: 550" in result.stderr
    bob = [
        json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()
    ][1]
    assert bob["status"] == "failed"
    assert bob["reply"] == {
        "code": 550,
        "enhanced_status": "5.1.1",
        "text": "5.1.1 no such user",
    }


def test_bad_rows_exit_2_listing_every_line_and_sending_nothing(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """Invalid rows: exit 2, each bad line on stderr, nothing sent."""
    recipients = tmp_path / "r.csv"
    recipients.write_text(
        "email,name,customer_id,plan\nann@example.test,Ann,1,pro\nbroken,Bad,2,pro\nc@example.test,C,3,pro\nalso@bad@x,D,4,pro\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["send", "-t", "welcome", "-r", str(recipients)])
    assert result.exit_code == 2
    assert "line 3: to: invalid address 'broken'" in result.stderr
    assert "line 5: to: one address per entry" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: 2 invalid rows")
    assert "Traceback" not in result.output
    mail_outbox.assert_nothing_sent()


def test_skip_invalid_sends_the_rest_and_exits_0_when_they_all_went(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """--skip-invalid: valid rows are sent; the bad one is reported; exit 0 (issue 12.9: was 1)."""
    recipients = tmp_path / "r.jsonl"
    recipients.write_text(
        '{"email": "a@example.test", "name": "A", "customer_id": 1, "plan": "pro"}\n{"email": "bad"}\n',
        encoding="utf-8",
    )
    report = tmp_path / "report.jsonl"
    result = runner.invoke(
        app,
        [
            "send",
            "-t",
            "welcome",
            "-r",
            str(recipients),
            "--skip-invalid",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0
    assert "1 sent, 0 failed, 1 invalid (2 total)" in result.stdout
    assert "skipped line 2: " in result.stderr
    mail_outbox.assert_sent_count(1)
    lines = [
        json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()
    ]
    assert lines[1] == {
        "line": 2,
        "status": "invalid",
        "error": "template 'welcome': subject.txt uses undefined variable 'name'",
    }


def test_dry_run_checks_everything_and_sends_nothing(mail_outbox: Outbox) -> None:
    """--dry-run renders and validates every row, then stops."""
    result = runner.invoke(
        app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--dry-run"]
    )
    assert result.exit_code == 0
    assert (
        "dry run: 4 message(s) would be sent, 0 invalid row(s); nothing was sent"
        in result.stdout
    )
    mail_outbox.assert_nothing_sent()


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        (
            {"MAILER_SMTP_PORT": "smtp"},
            [],
            "error: MAILER_SMTP_PORT: Input should be a valid integer",
        ),
        (
            {"MAILER_SMTP_PASSWROD": "hunter2"},
            [],
            "error: MAILER_SMTP_PASSWROD: unknown setting (did you mean MAILER_SMTP_PASSWORD?)",
        ),
        ({}, ["--template", "nope"], "error: template 'nope': no folder"),
        ({}, ["--recipients", "missing.csv"], "error: missing.csv: no such file"),
        (
            {"MAILER_FROM": ""},
            [],
            "error: MAILER_FROM: not set; nothing can be sent without a sender",
        ),
    ],
)
def test_usage_and_config_errors_are_one_line_with_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    mail_outbox: Outbox,
    env: dict[str, str],
    args: list[str],
    expected: str,
) -> None:
    """Bad settings, unknown templates and missing files: one line, exit 2, no traceback."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if env.get("MAILER_FROM") == "":
        monkeypatch.delenv("MAILER_FROM")
    base = {"--template": "welcome", "--recipients": RECIPIENTS}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = runner.invoke(
        app, ["send", *[item for pair in base.items() for item in pair]]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(expected)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.output
    mail_outbox.assert_nothing_sent()


def test_preview_shows_the_rendered_message() -> None:
    """`mailer preview` prints headers, text and HTML for one row."""
    result = runner.invoke(
        app, ["preview", "-t", "welcome", "-r", RECIPIENTS, "--line", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "Subject: Welcome to Example Shop, Client 062 李雷!" in result.stdout
    assert "To: Client 062 李雷 <li.lei@example.test>" in result.stdout
    assert "Your customer number is C-062." in result.stdout
    assert "--- HTML ---" in result.stdout


def test_preview_raw_prints_the_mime_message() -> None:
    """--raw prints the message as it would be sent."""
    result = runner.invoke(app, ["preview", "-t", "welcome", "-r", RECIPIENTS, "--raw"])
    assert result.exit_code == 0
    assert "Content-Type: multipart/alternative;" in result.stdout
    assert "MIME-Version: 1.0" in result.stdout


def test_no_arguments_prints_help() -> None:
    """Running `mailer` alone shows the commands."""
    result = runner.invoke(app, [])
    assert "send" in result.output
    assert "demo" in result.output
