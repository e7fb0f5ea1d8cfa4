"""The plugin's socket-free fixtures: mail_outbox, mock_send, mailer_settings."""

from __future__ import annotations

import os
import pkgutil
from collections.abc import Callable
from pathlib import Path
from unittest.mock import AsyncMock, call

import pytest

from mailer import (
    ConfigError,
    MailerSettings,
    Message,
    MessageClient,
    RecipientsRefusedError,
    Reply,
    SendResult,
    SendStatus,
    generate_message_client,
    send_messages,
)
from mailer.testing import (
    Addr,
    Contains,
    Mail,
    Outbox,
    OutboxTransport,
    capture_mail,
    patch_send,
    use_transport,
)
from mailer.transports import SMTPTransport

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
ANN = {"email": "ann@example.test", "name": "Ann", "customer_id": "C-1", "plan": "pro"}
BOB = {
    "email": "bob@example.test",
    "name": "Bob",
    "customer_id": "C-2",
    "plan": "basic",
}


@pytest.fixture
def settings(mailer_settings: Callable[..., MailerSettings]) -> MailerSettings:
    """Settings for the example templates, from the plugin's factory."""
    return mailer_settings(
        from_="Example Shop <shop@example.test>", templates_dir=EXAMPLES / "templates"
    )


# -- mail_outbox ---------------------------------------------------------------


async def test_mail_outbox_receives_what_send_messages_renders(
    mail_outbox: Outbox, settings: MailerSettings
) -> None:
    """send_messages through generate_message_client lands, rendered, in the outbox."""
    report = await send_messages("welcome", [ANN, BOB], settings=settings)
    assert (report.sent, report.failed) == (2, 0)
    mail = mail_outbox.one(to="ann@example.test")
    assert mail.subject == "Welcome to Example Shop, Ann!"
    assert mail.html is not None
    assert "<b>C-1</b>" in mail.html
    assert mail.message["From"] == "Example Shop <shop@example.test>"
    assert {r.message_id for r in report.results} == {m.message_id for m in mail_outbox}
    assert {str(r.reply) for r in report.results} == {
        "250 2.0.0 Ok: kept in memory as #1",
        "250 2.0.0 Ok: kept in memory as #2",
    }


async def test_mail_outbox_runs_validation_and_strips_bcc(
    mail_outbox: Outbox, settings: MailerSettings
) -> None:
    """The fake keeps the real pipeline: Bcc leaves the headers, a missing sender fails."""
    async with generate_message_client(settings) as client:
        await client.send(
            Message(
                to="a@example.test", bcc="audit@example.test", subject="s", body="b"
            )
        )
    mail = mail_outbox.one()
    assert mail.bcc == ("audit@example.test",)
    assert b"audit@" not in mail.raw
    no_sender = settings.model_copy(update={"from_": None})
    async with generate_message_client(no_sender) as client:
        with pytest.raises(ConfigError, match="MAILER_FROM"):
            await client.send(Message(to="a@example.test", subject="s", body="b"))
    assert len(mail_outbox) == 1


def test_the_fake_transport_is_undone_after_the_block(settings: MailerSettings) -> None:
    """Inside use_transport the factory gives the fake; after it, SMTP again."""
    outbox = Outbox()
    with use_transport(lambda s: OutboxTransport(outbox)):
        assert isinstance(generate_message_client(settings).transport, OutboxTransport)
        with capture_mail():  # nested blocks restore what they found
            pass
        assert isinstance(generate_message_client(settings).transport, OutboxTransport)
    assert isinstance(generate_message_client(settings).transport, SMTPTransport)
    with pytest.raises(RuntimeError), use_transport(lambda s: OutboxTransport(outbox)):
        raise RuntimeError("boom")
    assert isinstance(generate_message_client(settings).transport, SMTPTransport)


def test_clients_built_directly_are_not_faked(
    mail_outbox: Outbox, settings: MailerSettings
) -> None:
    """The seam is generate_message_client: a MessageClient(...) keeps SMTP."""
    assert isinstance(MessageClient(settings).transport, SMTPTransport)


# -- mock_send -----------------------------------------------------------------


async def test_mock_send_returns_a_real_result_and_records_the_await(
    mock_send: AsyncMock, settings: MailerSettings
) -> None:
    """The default outcome is a SENT SendResult with the prepared Message-ID."""
    async with generate_message_client(settings) as client:
        result = await client.send(
            Message(
                to="Bob <bob@example.test>", cc="c@example.test", subject="Hi", body="b"
            )
        )
    assert isinstance(result, SendResult)
    assert result.status is SendStatus.SENT
    assert result.accepted == ("bob@example.test", "c@example.test")
    assert result.message_id is not None
    assert result.message_id.endswith("@example.test>")
    mock_send.assert_awaited_once_with(Mail(to=Addr("bob@example.test"), subject="Hi"))


async def test_mock_send_sees_every_message_of_a_batch(
    mock_send: AsyncMock, settings: MailerSettings
) -> None:
    """send_messages goes through the seam: one await per row, in any order."""
    report = await send_messages("welcome", [ANN, BOB], settings=settings)
    assert report.sent == 2
    assert mock_send.await_count == 2
    mock_send.assert_has_awaits(
        [
            call(Mail(to="bob@example.test", text=Contains("C-2"))),
            call(Mail(to="ann@example.test", text=Contains("Pro plan"))),
        ],
        any_order=True,
    )


async def test_mock_send_checks_arguments_against_the_real_signature(
    mock_send: AsyncMock,
) -> None:
    """Calling it with arguments the real send refuses is a TypeError."""
    with pytest.raises(TypeError):
        await mock_send(Message(to="a@example.test", subject="s", body="b"), "extra")
    with pytest.raises(TypeError):
        await mock_send()


async def test_mock_send_side_effects_become_recorded_failures(
    mock_send: AsyncMock, settings: MailerSettings
) -> None:
    """A DeliveryError side effect fails that message only, with its Message-ID."""
    refusal = Reply(550, "5.1.1 no such user")

    def refuse_bob(message: Message) -> SendResult:
        if message.to[0].addr_spec == "bob@example.test":
            raise RecipientsRefusedError(
                "refused", refused={"bob@example.test": refusal}, reply=refusal
            )
        return SendResult(
            status=SendStatus.SENT, to=("ann@example.test",), message_id="<x@y>"
        )

    mock_send.side_effect = refuse_bob
    report = await send_messages("welcome", [ANN, BOB], settings=settings)
    assert [r.status for r in report.results] == ["sent", "failed"]
    assert report.results[0].message_id == "<x@y>"
    failed = report.results[1]
    assert failed.reply == refusal
    assert failed.message_id is not None
    assert failed.message_id.endswith("@example.test>")


async def test_mock_send_return_value_can_be_set(
    mock_send: AsyncMock, settings: MailerSettings
) -> None:
    """Setting return_value replaces the default result."""
    canned = SendResult(
        status=SendStatus.SENT, to=("x@example.test",), message_id="<c@d>"
    )
    mock_send.return_value = canned
    async with generate_message_client(settings) as client:
        assert (
            await client.send(Message(to="a@example.test", subject="s", body="b"))
            is canned
        )


async def test_mock_send_with_mail_outbox_also_records(
    mock_send: AsyncMock, mail_outbox: Outbox, settings: MailerSettings
) -> None:
    """Asked for together, mock_send spies: accepted messages land in the outbox."""
    async with generate_message_client(settings) as client:
        result = await client.send(
            Message(
                to="a@example.test", bcc="hidden@example.test", subject="spy", body="b"
            )
        )
        mock_send.side_effect = RecipientsRefusedError("refused", refused={})
        with pytest.raises(RecipientsRefusedError):
            await client.send(Message(to="b@example.test", subject="refused", body="b"))
    mail = mail_outbox.one(subject="spy")
    assert mail.bcc == ("hidden@example.test",)
    assert mail.message_id == result.message_id
    mail_outbox.assert_not_sent(subject="refused")
    assert mock_send.await_count == 2


async def test_patch_send_is_undone_after_the_block(settings: MailerSettings) -> None:
    """Outside patch_send, MessageClient.send is the real method again."""
    original = MessageClient.send
    with patch_send() as send:
        assert MessageClient.send is not original
        async with MessageClient(settings) as client:
            await client.send(Message(to="a@example.test", subject="s", body="b"))
        send.assert_awaited_once()
    assert MessageClient.send is original


async def test_a_missing_sender_fails_before_the_mock_is_awaited(
    mock_send: AsyncMock, settings: MailerSettings
) -> None:
    """As with the real send, no sender means ConfigError, and no await recorded."""
    no_sender = settings.model_copy(update={"from_": None})
    async with MessageClient(no_sender) as client:
        with pytest.raises(ConfigError):
            await client.send(Message(to="a@example.test", subject="s", body="b"))
    mock_send.assert_not_awaited()


# -- mailer_settings -----------------------------------------------------------


@pytest.fixture
def developer_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A developer's MAILER_* variables and .env, as a test run might inherit them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAILER_SMTP_HOST=dotenv.example.test\n")
    inherited = {"MAILER_FROM": "env@example.test", "MAILER_UNKNOWN": "x"}
    for key, value in inherited.items():
        monkeypatch.setenv(key, value)
    # As if pytest had started with them (the plugin notes them when loaded).
    monkeypatch.setattr("mailer.testing.plugin.INHERITED_VARIABLES", inherited)


def test_mailer_settings_keeps_the_environment_and_dotenv_out(
    developer_configuration: None,
    mailer_settings: Callable[..., MailerSettings],
) -> None:
    """MAILER_* variables and .env reach neither its settings nor MailerSettings()."""
    settings = mailer_settings(concurrency=2)
    assert settings.from_ == "sender@example.test"
    assert settings.concurrency == 2
    assert settings.smtp_host == "localhost"
    assert [key for key in os.environ if key.startswith("MAILER_")] == ["MAILER_FROM"]
    assert Path(".env").exists()
    code_under_test = MailerSettings()  # what generate_message_client() makes
    assert (code_under_test.smtp_host, code_under_test.from_) == (
        "localhost",
        "sender@example.test",
    )


async def test_mail_outbox_keeps_the_environment_and_dotenv_out(
    developer_configuration: None, mail_outbox: Outbox
) -> None:
    """A .env and MAILER_* variables are not read; the sender is the test default."""
    async with generate_message_client() as client:
        await client.send(Message(to="a@example.test", subject="s", body="b"))
    mail = mail_outbox.one()
    assert mail.from_ == ("sender@example.test",)
    assert mail.envelope.mail_from == "sender@example.test"
    assert generate_message_client().settings.smtp_host == "localhost"


async def test_mock_send_keeps_the_environment_and_dotenv_out(
    developer_configuration: None, mock_send: AsyncMock
) -> None:
    """mock_send's code under test sees the same configuration as mail_outbox's."""
    async with generate_message_client() as client:
        result = await client.send(Message(to="a@example.test", subject="s", body="b"))
    assert result.is_sent
    assert client.settings.from_ == "sender@example.test"
    assert client.settings.smtp_host == "localhost"


@pytest.fixture
def suite_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """A conftest-style fixture that configures mailer through the environment."""
    monkeypatch.setenv("MAILER_FROM", "Shop <shop@example.test>")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(EXAMPLES / "templates"))


async def test_a_suites_own_configuration_survives_the_doubles(
    suite_configuration: None, mail_outbox: Outbox, mock_send: AsyncMock
) -> None:
    """Variables a fixture set before the doubles' fixtures are the code's settings."""
    report = await send_messages("welcome", [ANN])
    assert report.sent == 1
    assert mail_outbox.one().from_ == ("shop@example.test",)


async def test_a_sender_set_in_the_test_replaces_the_default(
    mail_outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAILER_FROM set by the test is the sender (the default only fills a gap)."""
    monkeypatch.setenv("MAILER_FROM", "Shop <shop@example.test>")
    async with generate_message_client() as client:
        await client.send(Message(to="a@example.test", subject="s", body="b"))
    assert mail_outbox.one().from_ == ("shop@example.test",)


def test_mailer_settings_validates_like_the_real_thing(
    mailer_settings: Callable[..., MailerSettings],
) -> None:
    """Bad or unknown values are the usual one-line ConfigError."""
    with pytest.raises(ConfigError, match="^MAILER_TIMEOUT: "):
        mailer_settings(timeout=-1)
    with pytest.raises(ConfigError, match="^smtp_prot: unknown setting"):
        mailer_settings(smtp_prot=25)


async def test_a_side_effect_returning_none_means_accepted_as_usual(
    mock_send: AsyncMock, settings: MailerSettings
) -> None:
    """side_effect may pick some messages to fail and return None for the rest."""
    seen: list[str] = []

    def note(message: Message) -> None:
        seen.append(message.subject)

    mock_send.side_effect = note
    async with generate_message_client(settings) as client:
        result = await client.send(Message(to="a@example.test", subject="s", body="b"))
    assert seen == ["s"]
    assert result.is_sent
    assert result.accepted == ("a@example.test",)


def test_the_documented_seam_is_messageclient_send() -> None:
    """SEND_TARGET names the method patch_send replaces, for hand-made patches."""
    from mailer.testing import SEND_TARGET

    assert pkgutil.resolve_name(SEND_TARGET) is MessageClient.send


async def test_a_failed_mock_assertion_names_the_seam_and_the_differing_field(
    mock_send: AsyncMock, settings: MailerSettings
) -> None:
    """The message reads MessageClient.send(...) and says which field missed."""
    async with generate_message_client(settings) as client:
        await client.send(Message(to="a@example.test", subject="Hello", body="b"))
    with pytest.raises(AssertionError) as caught:
        mock_send.assert_awaited_once_with(Mail(subject="Goodbye"))
    assert (
        "Expected: MessageClient.send(Mail(subject='Goodbye') "
        "<missed: subject: wanted 'Goodbye', got 'Hello'>)"
    ) in str(caught.value)
