"""Hooks around each send: change, refuse, order, failing hooks, settings, the redirect."""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Callable, Iterator

import pytest

from mailer import (
    ConfigError,
    Delivery,
    Hooks,
    MailerSettings,
    Message,
    MessageClient,
    RecipientsRefusedError,
    Refuse,
    RefusedByHookError,
    Reply,
    SendResult,
    SendStatus,
)
from mailer.testing import SentMail
from mailer.transports import MemoryTransport, MockTransport


def message(n: int = 1, **fields: object) -> Message:
    values: dict[str, object] = {
        "to": f"user{n}@example.test",
        "subject": f"Message {n}",
        "body": f"Body {n}\n",
    }
    values.update(fields)
    return Message(**values)  # type: ignore[arg-type]


def tag(name: str, value: str) -> Callable[[Message], Message]:
    def hook(message: Message) -> Message:
        return dataclasses.replace(message, headers=(*message.headers, (name, value)))

    return hook


async def test_before_hook_changes_what_is_sent(settings: MailerSettings) -> None:
    """A before hook's returned message is the one serialised and delivered."""
    transport = MemoryTransport()
    client = MessageClient(settings, transport=transport)
    client.hooks.before_send(tag("X-Campaign", "spring"))
    result = await client.send(message(1))
    [sent] = transport.outbox
    assert sent.header("X-Campaign") == "spring"
    assert result.status is SendStatus.SENT


async def test_async_before_hook_may_change_recipients(
    settings: MailerSettings,
) -> None:
    """An async before hook can change the recipients: the envelope follows."""

    async def to_support(message: Message) -> Message:
        return dataclasses.replace(message, to=("support@example.test",))

    transport = MemoryTransport()
    client = MessageClient(
        settings, transport=transport, hooks=Hooks(before_send=[to_support])
    )
    await client.send(message(1))
    [sent] = transport.outbox
    assert sent.envelope.rcpt_tos == ("support@example.test",)


async def test_refusal_fails_the_message_sends_nothing_and_is_not_retried(
    settings: MailerSettings,
) -> None:
    """Refuse(reason): send raises RefusedByHookError, nothing reaches the transport."""
    calls: list[Message] = []

    def suppress(message: Message) -> Message | Refuse:
        calls.append(message)
        return Refuse("address on the suppression list")

    transport = MemoryTransport()
    client = MessageClient(
        settings, transport=transport, hooks=Hooks(before_send=[suppress])
    )
    with pytest.raises(RefusedByHookError, match="suppression list") as caught:
        await client.send(message(1))
    assert caught.value.reason == "address on the suppression list"
    assert caught.value.hook.endswith("suppress")
    assert len(transport.outbox) == 0
    assert len(calls) == 1  # not retried


async def test_refusal_in_a_batch_is_a_failed_result_with_the_reason(
    settings: MailerSettings,
) -> None:
    """In send_many a refused message is failed (not transient), the others are sent."""

    def refuse_two(message: Message) -> Message | Refuse:
        if message.subject == "Message 2":
            return Refuse("unsubscribed")
        return message

    transport = MemoryTransport()
    client = MessageClient(
        settings, transport=transport, hooks=Hooks(before_send=[refuse_two])
    )
    results = await client.send_many([message(n) for n in (1, 2, 3)])
    assert [r.status for r in results] == [
        SendStatus.SENT,
        SendStatus.FAILED,
        SendStatus.SENT,
    ]
    assert results[1].error is not None
    assert "unsubscribed" in results[1].error
    assert results[1].transient is False
    assert results[1].attempts == 0
    assert len(transport.outbox) == 2


async def test_hooks_run_in_registration_order(settings: MailerSettings) -> None:
    """Before hooks chain in order (each gets the previous one's message); after hooks too."""
    order: list[str] = []

    def first(message: Message) -> Message:
        order.append("before 1")
        return tag("X-Order", "1")(message)

    async def second(message: Message) -> Message:
        order.append("before 2")
        assert message.headers == (("X-Order", "1"),)
        return tag("X-Order-2", "2")(message)

    def after_1(message: Message, result: SendResult) -> None:
        order.append("after 1")

    async def after_2(message: Message, result: SendResult) -> None:
        order.append("after 2")

    transport = MemoryTransport()
    client = MessageClient(
        settings,
        transport=transport,
        hooks=Hooks(before_send=[first], after_send=[after_1]),
    )
    client.hooks.before_send(second)
    client.hooks.after_send(after_2)
    await client.send(message(1))
    assert order == ["before 1", "before 2", "after 1", "after 2"]
    assert transport.outbox[0].header("X-Order-2") == "2"


async def test_after_hook_sees_every_final_result(settings: MailerSettings) -> None:
    """sent, failed by the server, refused by a hook: each reaches after_send once, with the sent message."""
    seen: list[tuple[str, str, str]] = []

    def after(message: Message, result: SendResult) -> None:
        seen.append((message.subject, result.status.value, message.to[0].addr_spec))

    def handler(mail: SentMail) -> Delivery:
        if mail.subject == "Message 2":
            raise RecipientsRefusedError(
                "refused",
                refused={"user2@example.test": Reply(550, "5.1.1 no such user")},
                reply=Reply(550, "5.1.1 no such user"),
            )
        return Delivery(mail.envelope.rcpt_tos, {}, Reply(250, "ok"))

    def refuse_three(message: Message) -> Message | Refuse:
        return Refuse("no") if message.subject == "Message 3" else message

    hooks = Hooks(before_send=[tag("X-A", "1"), refuse_three], after_send=[after])
    client = MessageClient(settings, transport=MockTransport(handler), hooks=hooks)
    await client.send_many([message(n) for n in (1, 2, 3)])
    with pytest.raises(RecipientsRefusedError):
        await client.send(message(2))
    assert sorted(seen) == [
        ("Message 1", "sent", "user1@example.test"),
        ("Message 2", "failed", "user2@example.test"),
        ("Message 2", "failed", "user2@example.test"),
        ("Message 3", "failed", "user3@example.test"),
    ]


async def test_failing_after_hook_is_logged_and_the_message_stays_sent(
    settings: MailerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """An after hook that raises is logged; send returns sent, send_many too."""

    def broken(message: Message, result: SendResult) -> None:
        raise RuntimeError("database is down")

    later: list[str] = []
    transport = MemoryTransport()
    hooks = Hooks(after_send=[broken, lambda m, r: later.append(r.status.value)])
    client = MessageClient(settings, transport=transport, hooks=hooks)
    result = await client.send(message(1))
    [batch_result] = await client.send_many([message(2)])
    assert result.status is SendStatus.SENT
    assert batch_result.status is SendStatus.SENT
    assert later == ["sent", "sent"]  # the next hook still ran
    failures = [r for r in caplog.records if r.name == "mailer.hooks"]
    assert len(failures) == 2
    assert "after_send hook" in failures[0].getMessage()
    assert "the result stands" in failures[0].getMessage()
    assert failures[0].exc_info is not None


async def test_failing_before_hook_fails_the_message_unsent(
    settings: MailerSettings,
) -> None:
    """A before hook that raises, or returns None, refuses the message (nothing sent)."""

    def broken(message: Message) -> Message:
        raise KeyError("campaign")

    def forgot_to_return(message: Message) -> None:
        pass

    transport = MemoryTransport()
    for hook, words in (
        (broken, "raised KeyError"),
        (forgot_to_return, "returned NoneType"),
    ):
        client = MessageClient(
            settings, transport=transport, hooks=Hooks(before_send=[hook])
        )  # type: ignore[list-item]
        with pytest.raises(RefusedByHookError, match=words):
            await client.send(message(1))
    assert len(transport.outbox) == 0


async def test_batch_stopped_before_a_message_still_tells_after_hooks(
    settings: MailerSettings,
) -> None:
    """Messages a stopped batch never started end pending, and after_send hears of each."""
    import asyncio

    stop = asyncio.Event()
    stop.set()
    seen: list[str] = []
    client = MessageClient(
        settings,
        transport=MemoryTransport(),
        hooks=Hooks(after_send=[lambda m, r: seen.append(r.status.value)]),
    )
    results = await client.send_many([message(n) for n in range(3)], stop=stop)
    assert [r.status for r in results] == [SendStatus.PENDING] * 3
    assert seen == ["pending"] * 3


# -- settings: hooks named for the CLI, and the redirect ---------------------


@pytest.fixture
def hook_module() -> Iterator[types.ModuleType]:
    """An importable module of hooks (what MAILER_BEFORE_SEND names)."""
    module = types.ModuleType("shop_hooks")
    module.seen = []  # type: ignore[attr-defined]
    module.stamp = tag("X-Shop", "yes")  # type: ignore[attr-defined]
    module.record = lambda m, r: module.seen.append(r.status.value)  # type: ignore[attr-defined]
    module.not_callable = 42  # type: ignore[attr-defined]
    sys.modules["shop_hooks"] = module
    yield module
    del sys.modules["shop_hooks"]


async def test_hooks_named_in_settings_run_first(
    make_settings: Callable[..., MailerSettings], hook_module: types.ModuleType
) -> None:
    """MAILER_BEFORE_SEND / MAILER_AFTER_SEND hooks are imported and run before the client's own."""
    settings = make_settings(
        before_send="shop_hooks:stamp", after_send="shop_hooks:record"
    )
    transport = MemoryTransport()
    client = MessageClient(
        settings,
        transport=transport,
        hooks=Hooks(before_send=[tag("X-Shop", "second")]),
    )
    await client.send(message(1))
    assert transport.outbox[0].message.get_all("X-Shop") == ["yes", "second"]
    assert hook_module.seen == ["sent"]


@pytest.mark.parametrize(
    ("names", "error"),
    [
        (
            "no_such_module_here:hook",
            "MAILER_BEFORE_SEND: cannot import no_such_module_here:hook: No module named 'no_such_module_here'",
        ),
        ("shop_hooks:missing", "MAILER_BEFORE_SEND: shop_hooks has no missing"),
        (
            "shop_hooks:not_callable",
            "MAILER_BEFORE_SEND: shop_hooks:not_callable is not callable",
        ),
    ],
)
def test_bad_hook_names_are_one_line_config_errors(
    make_settings: Callable[..., MailerSettings],
    hook_module: types.ModuleType,
    names: str,
    error: str,
) -> None:
    """A hook that cannot be loaded is a ConfigError naming the setting and the hook."""
    with pytest.raises(ConfigError) as caught:
        MessageClient(make_settings(before_send=names), transport=MemoryTransport())
    assert str(caught.value) == error
    assert caught.value.key == "MAILER_BEFORE_SEND"


def test_hook_setting_must_name_module_and_function(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """MAILER_AFTER_SEND=record (no module) is refused when the settings load."""
    with pytest.raises(
        ConfigError, match=r"^MAILER_AFTER_SEND: expected module:function"
    ):
        make_settings(after_send="record")


async def test_redirect_sends_to_the_sandbox_and_keeps_the_recipients_in_headers(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """MAILER_REDIRECT_TO: one envelope recipient; To, Cc and Bcc in X-Mailer-Original-* headers."""
    transport = MemoryTransport()
    settings = make_settings(redirect_to="Sandbox <sandbox@example.test>")
    client = MessageClient(settings, transport=transport)
    result = await client.send(
        message(
            1,
            to=["Ann <ann@example.test>", "bob@example.test"],
            cc="carl@example.test",
            bcc="audit@example.test",
        )
    )
    [sent] = transport.outbox
    assert sent.envelope.rcpt_tos == ("sandbox@example.test",)
    assert sent.to == ("sandbox@example.test",)
    assert sent.cc == ()
    assert sent.header("X-Mailer-Original-To") == "ann@example.test, bob@example.test"
    assert sent.header("X-Mailer-Original-Cc") == "carl@example.test"
    assert sent.header("X-Mailer-Original-Bcc") == "audit@example.test"
    assert result.accepted == ("sandbox@example.test",)


async def test_redirect_comes_after_every_hook(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """A hook that adds a Bcc cannot get it past the redirect."""

    def add_bcc(message: Message) -> Message:
        return dataclasses.replace(message, bcc=("leak@example.test",))

    transport = MemoryTransport()
    client = MessageClient(
        make_settings(redirect_to="sandbox@example.test"), transport=transport
    )
    client.hooks.before_send(add_bcc)
    await client.send(message(1))
    [sent] = transport.outbox
    assert sent.envelope.rcpt_tos == ("sandbox@example.test",)
    assert sent.header("X-Mailer-Original-Bcc") == "leak@example.test"


async def test_redirect_holds_for_a_resend_to_some_recipients(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """send(message, recipients=[original]) under a redirect never reaches the original address."""
    transport = MemoryTransport()
    client = MessageClient(
        make_settings(redirect_to="sandbox@example.test"), transport=transport
    )
    with pytest.raises(RefusedByHookError, match="took out every recipient"):
        await client.send(message(1), recipients=["user1@example.test"])
    await client.send(message(1), recipients=["sandbox@example.test"])
    assert [m.envelope.rcpt_tos for m in transport.outbox] == [
        ("sandbox@example.test",)
    ]


def test_bad_redirect_address_is_refused(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """MAILER_REDIRECT_TO must be one valid address; the error names the key."""
    with pytest.raises(ConfigError, match=r"^MAILER_REDIRECT_TO: "):
        make_settings(redirect_to="not an address")
