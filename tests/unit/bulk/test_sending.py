"""send_messages() with plain unittest.mock: the techniques users need, on real code.

Each test here is also an example to copy:

* patch ``generate_message_client`` where it is looked up (``mailer.bulk.sending``),
  not where it is defined (``mailer.delivery.client``);
* replace the client's async ``send`` with an ``AsyncMock``;
* ``assert_awaited_once_with(Message(...))``: Message is a value, so equality works;
* a partial matcher (``MessageMatcher``) inside ``assert_has_calls([call(...)])``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, call, patch

import pytest

from mailer import (
    ConfigError,
    InvalidRecipientsError,
    Message,
    MessageClient,
    RecipientsRefusedError,
    Reply,
    SendResult,
    SendStatus,
    TemplateNotFoundError,
    send_messages,
    stream_messages,
)
from mailer.config.settings import MailerSettings
from mailer.transports import MemoryTransport

EXAMPLE_TEMPLATES = Path(__file__).resolve().parents[3] / "examples" / "templates"
ANN = {"email": "ann@example.test", "name": "Ann", "customer_id": "C-1", "plan": "pro"}
BOB = {
    "email": "bob@example.test",
    "name": "Bob",
    "customer_id": "C-2",
    "plan": "basic",
}


class MessageMatcher:
    """Equal to any Message whose given parts match: a partial matcher for mock calls.

    ``MessageMatcher(to="a@x", body_contains="Pro")`` compares only those parts,
    so ``assert_has_calls([call(MessageMatcher(...))])`` can check what matters
    without restating whole messages.
    """

    def __init__(
        self,
        *,
        to: str | None = None,
        subject: str | None = None,
        body_contains: str | None = None,
    ) -> None:
        self.to = to
        self.subject = subject
        self.body_contains = body_contains

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        if self.to is not None and [a.addr_spec for a in other.to] != [self.to]:
            return False
        if self.subject is not None and other.subject != self.subject:
            return False
        return self.body_contains is None or self.body_contains in other.body

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if v is not None}
        return f"MessageMatcher({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


def sent_result(message: Message) -> SendResult:
    return SendResult(
        status=SendStatus.SENT,
        to=tuple(a.addr_spec for a in message.to),
        message_id="<fake@example.test>",
        accepted=tuple(a.addr_spec for a in message.to),
        reply=Reply(250, "2.0.0 OK"),
    )


@pytest.fixture
def client(settings: MailerSettings) -> MessageClient:
    """A real client whose `send` is an AsyncMock returning real-shaped results."""
    real = MessageClient(settings, transport=MemoryTransport())
    real.send = AsyncMock(side_effect=sent_result)  # type: ignore[method-assign]
    return real


async def test_patch_the_factory_where_it_is_looked_up(
    settings: MailerSettings, client: MessageClient
) -> None:
    """Patching mailer.bulk.sending.generate_message_client swaps the client send_messages uses."""
    with patch(
        "mailer.bulk.sending.generate_message_client", return_value=client
    ) as factory:
        report = await send_messages("welcome", [ANN], settings=settings)
    factory.assert_called_once_with(settings)
    client.send.assert_awaited_once_with(  # type: ignore[attr-defined]
        Message(
            to="Ann <ann@example.test>",
            subject="Welcome to Example Shop, Ann!",
            body=(
                "Hello Ann,\n\nThank you for joining Example Shop. Your customer number is C-1.\n"
                "Your Pro plan is active: free shipping on every order.\n\n"
                "Start here: https://shop.example.test/start?customer=C-1\n\n-- \n"
                "You receive this because you signed up at Example Shop. "
                "Reply to this email if you have a question.\n"
            ),
            html=client.send.await_args.args[0].html,  # type: ignore[attr-defined]
        )
    )
    assert (report.sent, report.failed) == (1, 0)


async def test_patching_where_it_is_defined_does_not_reach_send_messages(
    settings: MailerSettings, client: MessageClient
) -> None:
    """The classic mistake: mailer.delivery.client.generate_message_client is not the name used."""
    transport_used: list[object] = []
    real_factory = MessageClient

    def spy_client(*args: Any, **kwargs: Any) -> MessageClient:
        made = real_factory(*args, transport=MemoryTransport())
        transport_used.append(made.transport)
        return made

    with (
        patch("mailer.delivery.client.generate_message_client", return_value=client),
        patch("mailer.bulk.sending.generate_message_client", side_effect=spy_client),
    ):
        await send_messages("welcome", [ANN], settings=settings)
    client.send.assert_not_awaited()  # type: ignore[attr-defined]
    assert len(transport_used) == 1


async def test_partial_matchers_inside_assert_has_calls(
    settings: MailerSettings, client: MessageClient
) -> None:
    """assert_has_calls with MessageMatcher checks the parts that matter, in order."""
    with patch("mailer.bulk.sending.generate_message_client", return_value=client):
        await send_messages("welcome", [ANN, BOB], settings=settings)
    send: AsyncMock = client.send  # type: ignore[assignment]
    assert send.await_count == 2
    send.assert_has_calls(
        [
            call(
                MessageMatcher(
                    to="ann@example.test", body_contains="Pro plan is active"
                )
            ),
            call(
                MessageMatcher(
                    to="bob@example.test", body_contains="customer number is C-2"
                )
            ),
        ],
        any_order=True,
    )
    with pytest.raises(AssertionError):
        send.assert_has_calls(
            [
                call(
                    MessageMatcher(
                        to="bob@example.test", body_contains="Pro plan is active"
                    )
                )
            ]
        )


async def test_a_bad_row_stops_the_batch_before_anything_is_sent(
    settings: MailerSettings, client: MessageClient
) -> None:
    """Every bad row is listed with its line; send is never awaited."""
    rows = [ANN, {**ANN, "email": "not-an-address"}, BOB, {"email": "c@example.test"}]
    with (
        patch(
            "mailer.bulk.sending.generate_message_client", return_value=client
        ) as factory,
        pytest.raises(InvalidRecipientsError) as caught,
    ):
        await send_messages("welcome", rows, settings=settings)
    factory.assert_not_called()
    client.send.assert_not_awaited()  # type: ignore[attr-defined]
    lines = [(row.line, row.error.split(":")[0]) for row in caught.value.rows]
    assert lines == [(2, "to"), (4, "template 'welcome'")]
    assert "undefined variable 'name'" in caught.value.rows[1].error
    assert str(caught.value).startswith(
        "2 invalid rows (first: line 2: to: invalid address"
    )


async def test_skip_invalid_sends_the_valid_rows_and_reports_the_rest(
    settings: MailerSettings, client: MessageClient
) -> None:
    """With skip_invalid, valid rows go out and bad ones are counted as invalid."""
    rows = [
        ANN,
        {"email": "broken@", "name": "X", "customer_id": "1", "plan": "p"},
        BOB,
    ]
    with patch("mailer.bulk.sending.generate_message_client", return_value=client):
        report = await send_messages(
            "welcome", rows, settings=settings, skip_invalid=True
        )
    assert (report.sent, report.failed, report.invalid, report.total) == (2, 0, 1, 3)
    assert report.invalid_rows[0].line == 2
    assert not report.ok
    assert [c.args[0].to[0].addr_spec for c in client.send.await_args_list] == [
        "ann@example.test",
        "bob@example.test",
    ]  # type: ignore[attr-defined]


async def test_a_failure_part_way_is_reported_and_the_rest_still_go(
    settings: MailerSettings, client: MessageClient
) -> None:
    """A refused message ends as failed with the server's reply; others are sent."""
    refusal = Reply(550, "5.1.1 mailbox unavailable")

    def refuse_ann(message: Message) -> SendResult:
        if message.to[0].addr_spec == "ann@example.test":
            raise RecipientsRefusedError(
                "refused", refused={"ann@example.test": refusal}, reply=refusal
            )
        return sent_result(message)

    client.send.side_effect = refuse_ann  # type: ignore[attr-defined]
    with patch("mailer.bulk.sending.generate_message_client", return_value=client):
        report = await send_messages("welcome", [ANN, BOB], settings=settings)
    assert (report.sent, report.failed) == (1, 1)
    assert [r.status for r in report.results] == ["failed", "sent"]
    assert report.results[0].to_report() == {
        "to": "ann@example.test",
        "status": "failed",
        "reply": {
            "code": 550,
            "enhanced_status": "5.1.1",
            "text": "5.1.1 mailbox unavailable",
        },
        "message_id": None,
        "attempts": 1,
        "refused": {
            "ann@example.test": {
                "code": 550,
                "enhanced_status": "5.1.1",
                "text": "5.1.1 mailbox unavailable",
            }
        },
        "recipients": {"ann@example.test": "rejected"},
        "error": "refused",
    }


async def test_messages_really_reach_the_transport(settings: MailerSettings) -> None:
    """Without mocks, send_messages renders and hands real bytes to the transport."""
    transport = MemoryTransport()
    real = MessageClient(settings, transport=transport)
    with patch("mailer.bulk.sending.generate_message_client", return_value=real):
        await send_messages(
            "welcome", [ANN, BOB], settings=settings, context={"plan": "basic"}
        )
    assert sorted(m.to[0] for m in transport.outbox) == [
        "ann@example.test",
        "bob@example.test",
    ]
    ann = next(m for m in transport.outbox if m.to == ("ann@example.test",))
    assert ann.message["To"] == "Ann <ann@example.test>"
    assert ann.html is not None
    assert "<b>C-1</b>" in ann.html


async def test_templates_dir_is_an_argument_as_for_render(
    make_settings: Callable[..., MailerSettings], tmp_path: Path
) -> None:
    """send_messages and stream_messages take templates_dir, as render() does (12.17)."""
    settings = make_settings(templates_dir=tmp_path / "elsewhere")
    examples = EXAMPLE_TEMPLATES
    transport = MemoryTransport()
    real = MessageClient(settings, transport=transport)
    with patch("mailer.bulk.sending.generate_message_client", return_value=real):
        report = await send_messages(
            "welcome", [ANN], settings=settings, templates_dir=examples
        )
        streamed = [
            outcome
            async for outcome in stream_messages(
                "welcome", [BOB], settings=settings, templates_dir=str(examples)
            )
        ]
    assert report.sent == 1
    assert [line for line, _ in streamed] == [1]
    assert [m.subject for m in transport.outbox] == [
        "Welcome to Example Shop, Ann!",
        "Welcome to Example Shop, Bob!",
    ]
    with pytest.raises(TemplateNotFoundError):
        await send_messages("welcome", [ANN], settings=settings)


async def test_unknown_template_fails_before_the_client_is_made(
    settings: MailerSettings,
) -> None:
    """An unknown template set is an error before any connection."""
    with (
        patch("mailer.bulk.sending.generate_message_client") as factory,
        pytest.raises(TemplateNotFoundError),
    ):
        await send_messages("nope", [ANN], settings=settings)
    factory.assert_not_called()


async def test_no_sender_fails_before_the_client_is_made(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """Without MAILER_FROM nothing is sent and the key is named."""
    with (
        patch("mailer.bulk.sending.generate_message_client") as factory,
        pytest.raises(ConfigError, match="^MAILER_FROM"),
    ):
        await send_messages("welcome", [ANN], settings=make_settings(from_=None))
    factory.assert_not_called()


async def test_a_one_shot_iterator_is_read_once_and_still_checked_first(
    settings: MailerSettings, client: MessageClient
) -> None:
    """A generator of rows works: it is collected, checked, then sent."""
    with patch("mailer.bulk.sending.generate_message_client", return_value=client):
        report = await send_messages(
            "welcome", (row for row in [ANN, BOB]), settings=settings
        )
    assert report.sent == 2
