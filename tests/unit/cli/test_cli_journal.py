"""`mailer send --journal` and `mailer status`, in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import pytest
from typer.testing import CliRunner

from mailer import MessageClient, RecipientsRefusedError, Reply
from mailer.cli.app import app
from mailer.config.settings import MailerSettings
from mailer.testing import SentMail
from mailer.transports import MockTransport

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RECIPIENTS = str(EXAMPLES / "recipients.csv")
runner = CliRunner()
NO_USER = Reply(550, "5.1.1 no such user")


# Configured through the environment, as a user would set it.
pytestmark = pytest.mark.usefixtures("configured_environment")


@pytest.fixture
def outbox() -> Iterator[list[SentMail]]:
    """Every message handed to the CLI's transport; bob's is refused with 550."""
    sent: list[SentMail] = []

    def refuse_bob(mail: SentMail) -> None:
        sent.append(mail)
        if mail.to == ("bob@example.test",):
            raise RecipientsRefusedError(
                "refused bob@example.test: 550 5.1.1 no such user",
                refused={"bob@example.test": NO_USER},
                reply=NO_USER,
            )

    def client(settings: MailerSettings) -> MessageClient:
        return MessageClient(settings, transport=MockTransport(refuse_bob))

    with patch("mailer.bulk.sending.generate_message_client", side_effect=client):
        yield sent


def test_send_with_a_journal_then_again_resends_nothing(
    outbox: list[SentMail], tmp_path: Path
) -> None:
    """The second run resumes: nothing sent again, the summary says so."""
    journal = str(tmp_path / "welcome.journal")
    args = ["send", "-t", "welcome", "-r", RECIPIENTS, "--journal", journal]
    first = runner.invoke(app, args)
    assert first.exit_code == 1
    assert "3 sent, 1 failed" in first.stdout
    assert len(outbox) == 4
    report = tmp_path / "again.jsonl"
    second = runner.invoke(app, [*args, "--report", str(report)])
    assert second.exit_code == 1
    assert len(outbox) == 4
    assert "resumed: 3 already sent and 1 refused for good" in second.stdout
    assert "sending 0:" in second.stdout
    assert "3 sent, 1 failed" in second.stdout
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["sent", "failed", "sent", "sent"]
    assert all(line["attempts"] == 1 for line in lines)
    assert lines[1]["reply"]["code"] == 550


def test_status_prints_counts_and_failures(
    outbox: list[SentMail], tmp_path: Path
) -> None:
    """`mailer status`: the counts line, then each failure; exit 1 if not all sent."""
    journal = str(tmp_path / "welcome.journal")
    runner.invoke(
        app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--journal", journal]
    )
    result = runner.invoke(app, ["status", "--journal", journal])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"journal {journal}: template 'welcome', recipients {RECIPIENTS}, 4 message(s)"
    )
    assert lines[1] == "0 pending, 0 sending, 3 sent, 1 failed, 0 deferred"
    assert lines[2] == "0 ambiguous (may have been delivered twice, same Message-ID)"
    assert lines[3] == (
        "failed line 3 bob@example.test: refused bob@example.test: 550 5.1.1 no "
        "such user (final; 1 attempt(s))"
    )


def test_status_of_a_missing_journal_is_a_one_line_error(tmp_path: Path) -> None:
    """A wrong path: exit 2, one line, no traceback."""
    result = runner.invoke(app, ["status", "--journal", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'}: no such journal file"


def test_a_journal_of_another_batch_is_refused_before_sending(
    outbox: list[SentMail], tmp_path: Path
) -> None:
    """--journal of another recipients file: exit 2, nothing sent."""
    journal = str(tmp_path / "welcome.journal")
    runner.invoke(
        app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--journal", journal]
    )
    other = tmp_path / "other.csv"
    other.write_text("email,name,customer_id,plan\nzed@example.test,Zed,C-9,pro\n")
    result = runner.invoke(
        app, ["send", "-t", "welcome", "-r", str(other), "--journal", journal]
    )
    assert result.exit_code == 2
    assert "is the journal of another batch" in result.stderr
    assert len(outbox) == 4
