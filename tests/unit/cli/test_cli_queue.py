"""The queue's commands without a database: one-line errors, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer.cli.app import app

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RECIPIENTS = str(EXAMPLES / "recipients.csv")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sender and the example templates, through the environment."""
    monkeypatch.setenv("MAILER_FROM", "Example Shop <shop@example.test>")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(EXAMPLES / "templates"))


@pytest.mark.parametrize(
    "args",
    [
        ["worker"],
        ["queue", "init"],
        ["status", "--queue"],
        ["status", "--batch", "3"],
        ["send", "-t", "welcome", "-r", RECIPIENTS, "--queue"],
    ],
)
def test_every_queue_command_needs_the_dsn(args: list[str]) -> None:
    """Without MAILER_QUEUE_DSN: exit 2 and one line naming it."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: MAILER_QUEUE_DSN: not set")


@pytest.mark.parametrize(
    ("extra", "named", "instead"),
    [
        (["--journal", "j.db"], "--journal", "mailer status --batch"),
        (["--report", "r.jsonl"], "--report", "mailer status --batch"),
        (["--attach", RECIPIENTS], "--attach/--attach-column", "send_later("),
    ],
)
def test_queue_refuses_options_that_belong_to_a_direct_send(
    extra: list[str], named: str, instead: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--queue with --journal, --report or --attach: exit 2, saying what to do instead."""
    monkeypatch.setenv("MAILER_QUEUE_DSN", "postgresql://u:p@127.0.0.1:1/db")
    result = runner.invoke(
        app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--queue", *extra]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {named}:")
    assert instead in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--queue", "--batch", "1"],
        ["status", "--queue", "--journal", "x"],
    ],
)
def test_status_takes_exactly_one_source(args: list[str]) -> None:
    """None or two of --journal/--batch/--queue: exit 2 with the choices."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "give one of --journal FILE, --batch ID or --queue" in result.stderr


def test_a_bad_dsn_setting_is_one_line_without_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MAILER_QUEUE_DSN=mysql://...: the key is named, the password is not shown."""
    monkeypatch.setenv("MAILER_QUEUE_DSN", "mysql://u:hunter2@db/app")
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 2
    assert "MAILER_QUEUE_DSN" in result.stderr
    assert "hunter2" not in result.output + result.stderr
