"""MessageClient on in-memory and mock transports: results, order, concurrency, failures."""

from __future__ import annotations

import asyncio
import re

import pytest

from mailer import (
    ConfigError,
    Delivery,
    Message,
    MessageClient,
    RecipientsRefusedError,
    Reply,
    SendStatus,
    generate_message_client,
)
from mailer.config.settings import MailerSettings
from mailer.delivery.client import BATCH_DEPTH
from mailer.exceptions import ConnectError
from mailer.testing import SentMail
from mailer.transports import MemoryTransport, MockTransport, SMTPTransport

MESSAGE_ID = re.compile(r"^<[0-9a-f]{32}@example\.test>$")


def message(n: int = 1, **fields: object) -> Message:
    values: dict[str, object] = {
        "to": f"user{n}@example.test",
        "subject": f"Message {n}",
        "body": f"Body {n}\n",
    }
    values.update(fields)
    return Message(**values)  # type: ignore[arg-type]


async def test_send_returns_the_result_with_message_id(
    settings: MailerSettings,
) -> None:
    """send() reports accepted recipients, the reply and the Message-ID."""
    transport = MemoryTransport()
    async with MessageClient(settings, transport=transport) as client:
        result = await client.send(message(1, bcc="audit@example.test"))
    assert result.status is SendStatus.SENT
    assert result.accepted == ("user1@example.test", "audit@example.test")
    assert result.reply == Reply(250, "2.0.0 Ok: kept in memory as #1")
    assert result.message_id is not None
    assert MESSAGE_ID.match(result.message_id)
    [sent] = transport.outbox
    assert sent.message["Message-ID"] == result.message_id
    assert sent.envelope.mail_from == "shop@example.test"
    assert sent.bcc == ("audit@example.test",)
    assert b"audit@" not in sent.raw


async def test_the_configured_sender_is_the_from(settings: MailerSettings) -> None:
    """MAILER_FROM becomes the From header, display name included."""
    transport = MemoryTransport()
    async with MessageClient(settings, transport=transport) as client:
        await client.send(message())
    assert transport.outbox[0].message["From"] == "Example Shop <shop@example.test>"


async def test_sending_without_any_sender_is_a_config_error(make_settings) -> None:  # type: ignore[no-untyped-def]
    """No MAILER_FROM and no message sender: a ConfigError naming MAILER_FROM."""
    settings = make_settings(from_=None)
    async with MessageClient(settings, transport=MemoryTransport()) as client:
        with pytest.raises(ConfigError, match="^MAILER_FROM: not set") as caught:
            await client.send(message())
    assert caught.value.key == "MAILER_FROM"


async def test_send_many_returns_results_in_input_order(
    settings: MailerSettings,
) -> None:
    """Results come back in input order even when later messages finish first."""

    async def slow_first(mail: SentMail) -> None:
        # Message 1 finishes last, message 5 first.
        number = int(mail.subject.split()[-1])
        await asyncio.sleep(0.01 * (6 - number))

    async with MessageClient(settings, transport=MockTransport(slow_first)) as client:
        results = await client.send_many(message(n) for n in range(1, 6))
    assert [r.to for r in results] == [(f"user{n}@example.test",) for n in range(1, 6)]


async def test_send_many_is_bounded_by_concurrency(make_settings) -> None:  # type: ignore[no-untyped-def]
    """No more than BATCH_DEPTH x MAILER_CONCURRENCY sends are in flight at once."""
    settings = make_settings(concurrency=3)
    in_flight = peak = 0

    async def track(mail: SentMail) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1

    async with MessageClient(settings, transport=MockTransport(track)) as client:
        results = await client.send_many(message(n) for n in range(20))
    assert len(results) == 20
    # The transport bounds connections to 3; the client keeps each one's next
    # messages ready (tests/integration/test_pool.py checks the connections).
    assert peak == 3 * BATCH_DEPTH


async def test_one_failure_neither_cancels_nor_hides_the_others(
    settings: MailerSettings,
) -> None:
    """A refused message is recorded as failed with the reply; the rest are sent."""
    refusal = Reply(550, "5.1.1 <user3@example.test>: no such user")

    def refuse_three(mail: SentMail) -> None:
        if mail.to == ("user3@example.test",):
            raise RecipientsRefusedError(
                f"refused: {refusal}",
                refused={"user3@example.test": refusal},
                reply=refusal,
            )

    async with MessageClient(settings, transport=MockTransport(refuse_three)) as client:
        results = await client.send_many([message(n) for n in range(1, 6)])
    assert [r.status for r in results] == ["sent", "sent", "failed", "sent", "sent"]
    failed = results[2]
    assert failed.reply == refusal
    assert failed.refused == {"user3@example.test": refusal}
    assert failed.error is not None
    assert "550" in failed.error
    assert failed.message_id is not None
    assert MESSAGE_ID.match(failed.message_id)
    assert failed.to_report()["reply"] == {
        "code": 550,
        "enhanced_status": "5.1.1",
        "text": "5.1.1 <user3@example.test>: no such user",
    }


async def test_partial_refusal_is_data_not_an_error(settings: MailerSettings) -> None:
    """One refused recipient of two: the message is sent, the refusal recorded."""

    def refuse_bob(mail: SentMail) -> Delivery:
        return Delivery(
            accepted=("ann@example.test",),
            refused={"bob@example.test": Reply(550, "5.1.1 unknown")},
            reply=Reply(250, "2.0.0 queued"),
        )

    async with MessageClient(settings, transport=MockTransport(refuse_bob)) as client:
        result = await client.send(message(to=["ann@example.test", "bob@example.test"]))
    assert result.is_sent
    assert result.refused == {"bob@example.test": Reply(550, "5.1.1 unknown")}
    assert result.to_report()["refused"] == {
        "bob@example.test": {
            "code": 550,
            "enhanced_status": "5.1.1",
            "text": "5.1.1 unknown",
        }
    }


async def test_an_unexpected_exception_is_recorded_not_raised(
    settings: MailerSettings,
) -> None:
    """A bug in one send is recorded as that message's failure."""

    def explode(mail: SentMail) -> None:
        if mail.subject == "Message 2":
            raise RuntimeError("boom")

    async with MessageClient(settings, transport=MockTransport(explode)) as client:
        results = await client.send_many([message(1), message(2), message(3)])
    assert [r.is_sent for r in results] == [True, False, True]
    assert results[1].error == "RuntimeError: boom"


async def test_an_error_in_the_message_source_is_raised_after_in_flight_sends(
    settings: MailerSettings,
) -> None:
    """A generator that fails stops new sends; those started finish, then it raises."""
    transport = MemoryTransport()

    def messages():  # type: ignore[no-untyped-def]
        yield message(1)
        yield message(2)
        raise ValueError("bad source")

    async with MessageClient(settings, transport=transport) as client:
        with pytest.raises(ValueError, match="bad source"):
            await client.send_many(messages())
    assert len(transport.outbox) == 2


async def test_delivery_error_carries_the_message_id(settings: MailerSettings) -> None:
    """A failed send() raises with the Message-ID it had assigned."""

    def unreachable(mail: SentMail) -> None:
        raise ConnectError("cannot reach smtp.example.test:587", transient=True)

    async with MessageClient(settings, transport=MockTransport(unreachable)) as client:
        with pytest.raises(ConnectError) as caught:
            await client.send(message())
    assert caught.value.transient is True
    assert caught.value.message_id is not None
    assert MESSAGE_ID.match(caught.value.message_id)


def test_the_factory_builds_an_smtp_client_from_settings(
    settings: MailerSettings,
) -> None:
    """generate_message_client() gives an SMTP-backed client for the settings."""
    client = generate_message_client(settings)
    assert client.settings is settings
    assert isinstance(client.transport, SMTPTransport)


def test_the_factory_reads_the_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without settings the factory loads MAILER_* variables."""
    monkeypatch.setenv("MAILER_SMTP_HOST", "smtp.example.test")
    assert generate_message_client().settings.smtp_host == "smtp.example.test"


async def test_on_result_sees_every_result_as_it_completes(
    settings: MailerSettings,
) -> None:
    """on_result is called once per message."""
    seen: list[str] = []
    async with MessageClient(settings, transport=MemoryTransport()) as client:
        await client.send_many(
            [message(1), message(2)], on_result=lambda r: seen.append(r.to[0])
        )
    assert sorted(seen) == ["user1@example.test", "user2@example.test"]
