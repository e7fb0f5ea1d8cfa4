"""`mailer send --report` streams: each line is written as its message completes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from unittest.mock import patch

import pytest
from typer.testing import CliRunner

from mailer import MessageClient
from mailer.cli.app import app
from mailer.config.settings import MailerSettings
from mailer.testing import SentMail
from mailer.transports import MockTransport

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RECIPIENTS = str(EXAMPLES / "recipients.csv")
CSV_LINE = {
    "ann@example.test": 2,
    "bob@example.test": 3,
    "li.lei@example.test": 4,
    "zoe@example.test": 5,
}


# Configured through the environment, as a user would set it.
pytestmark = pytest.mark.usefixtures("configured_environment")


def test_report_lines_are_on_disk_before_the_batch_ends(tmp_path: Path) -> None:
    """While the last message is still being sent, the others are in the report."""
    report = tmp_path / "report.jsonl"
    seen_while_sending: list[list[str]] = []

    async def zoe_last(mail: SentMail) -> None:
        if mail.to == ("zoe@example.test",):
            await asyncio.sleep(0.05)
            lines = report.read_text(encoding="utf-8").splitlines()
            seen_while_sending.append([json.loads(line)["to"] for line in lines])

    def client(settings: MailerSettings) -> MessageClient:
        return MessageClient(settings, transport=MockTransport(zoe_last))

    with patch("mailer.bulk.sending.generate_message_client", side_effect=client):
        result = CliRunner().invoke(
            app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--report", str(report)]
        )
    assert result.exit_code == 0, result.output
    assert seen_while_sending == [
        ["ann@example.test", "bob@example.test", "li.lei@example.test"]
    ]


def test_each_report_line_names_its_csv_line_in_completion_order(
    tmp_path: Path,
) -> None:
    """Lines come as messages complete, and each carries its recipients-file line."""
    report = tmp_path / "report.jsonl"

    # ann's goes alone (the first-attempt gate); the other three then together.
    async def bob_slow(mail: SentMail) -> None:
        if mail.to == ("bob@example.test",):
            await asyncio.sleep(0.05)

    def client(settings: MailerSettings) -> MessageClient:
        return MessageClient(settings, transport=MockTransport(bob_slow))

    with patch("mailer.bulk.sending.generate_message_client", side_effect=client):
        result = CliRunner().invoke(
            app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--report", str(report)]
        )
    assert result.exit_code == 0, result.output
    lines = [
        json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()
    ]
    assert lines[-1]["to"] == "bob@example.test"
    assert {line["to"]: line["line"] for line in lines} == CSV_LINE
