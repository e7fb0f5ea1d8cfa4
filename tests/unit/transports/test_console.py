"""MAILER_DSN=console://: each message printed whole, nothing sent."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer import MailerSettings, Message, MessageClient
from mailer.cli.app import app
from mailer.transports import ConsoleTransport
from mailer.transports.factory import transport_from_settings

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_the_console_dsn_selects_the_console_transport(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """console:// builds a ConsoleTransport, with no relay to connect to."""
    settings = make_settings(dsn="console://")
    assert settings.relay_mode == "console"
    assert isinstance(transport_from_settings(settings), ConsoleTransport)


async def test_each_message_is_printed_with_its_envelope_bcc_included(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """The envelope (Bcc too) and the exact content are written; all accepted."""
    stream = io.StringIO()
    settings = make_settings(from_="shop@example.test")
    async with MessageClient(settings, transport=ConsoleTransport(stream)) as client:
        result = await client.send(
            Message(
                to="ann@example.test",
                bcc="audit@example.test",
                subject="Hello",
                body="Hi Ann\n",
            )
        )
    printed = stream.getvalue()
    assert printed.startswith(
        "MAIL FROM:<shop@example.test>\n"
        "RCPT TO:<ann@example.test>\nRCPT TO:<audit@example.test>\n"
    )
    assert "Subject: Hello\n" in printed
    assert "Hi Ann\n" in printed
    assert "Bcc" not in printed  # the envelope says it; the header never does
    assert f"Message-ID: {result.message_id}" in printed
    assert result.accepted == ("ann@example.test", "audit@example.test")


@pytest.mark.usefixtures("configured_environment")
def test_mailer_send_with_the_console_dsn_prints_every_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`mailer send` with MAILER_DSN=console:// shows the batch and sends nothing."""
    monkeypatch.setenv("MAILER_DSN", "console://")
    result = CliRunner().invoke(
        app,
        ["send", "-t", "welcome", "-r", str(EXAMPLES / "recipients.csv")],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("MAIL FROM:<shop@example.test>") == 4
    assert result.output.count("\nSubject: ") == 4
    assert "Subject: Welcome to Example Shop, Ann" in result.output
    assert "4 sent, 0 failed" in result.output
