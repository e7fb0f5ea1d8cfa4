"""The connection pool over real sockets: lazy opening, reuse limits, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as ServerEnvelope

from mailer import (
    ConnectError,
    DeliveryTimeoutError,
    Message,
    MessageClient,
    RejectedError,
    SendStatus,
)
from mailer.config.settings import MailerSettings
from mailer.inbox.server import InboxHandler, start_inbox

ScriptedServerFactory = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_connections_open_on_demand_and_end_with_quit(
    scripted_server: ScriptedServerFactory,
    pipelining: bool,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """Nothing connects before the first send; every session ends with QUIT."""
    async with scripted_server(pipelining=pipelining) as server:
        async with MessageClient(settings_on(server.port, concurrency=3)) as client:
            await asyncio.sleep(0)
            assert server.sessions == 0
            results = await client.send_many(mail(n) for n in range(30))
        assert all(result.is_sent for result in results)
        assert len(server.messages) == 30
        assert server.sessions == 3
        assert server.quits == 3


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_connection_carries_at_most_max_messages(
    scripted_server: ScriptedServerFactory,
    pipelining: bool,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """MAILER_POOL_MAX_MESSAGES=3: seven messages take three sessions, each QUIT."""
    async with scripted_server(pipelining=pipelining) as server:
        settings = settings_on(server.port, concurrency=1, pool_max_messages=3)
        async with MessageClient(settings) as client:
            results = await client.send_many(mail(n) for n in range(7))
        assert all(result.is_sent for result in results)
        assert server.sessions == 3
        assert server.quits == 3
        mails_per_session = [
            sum(read.count("MAIL") for read in server.reads[start:end])
            for start, end in _session_spans(server.reads)
        ]
        assert mails_per_session == [3, 3, 1]


def _session_spans(reads: list[list[str]]) -> list[tuple[int, int]]:
    starts = [i for i, read in enumerate(reads) if read and read[0] == "EHLO"]
    return list(zip(starts, [*starts[1:], len(reads)], strict=True))


async def test_an_idle_connection_is_closed_after_max_idle(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """MAILER_POOL_MAX_IDLE: a connection left unused is QUIT; the next send reconnects."""
    settings = settings_on(scripted.port, concurrency=1, pool_max_idle=0.1)
    async with MessageClient(settings) as client:
        await client.send(mail(1))
        await asyncio.sleep(0.4)
        assert scripted.quits == 1  # closed while idle, not at exit
        await client.send(mail(2))
    assert scripted.sessions == 2
    assert len(scripted.messages) == 2


async def test_an_old_connection_takes_no_new_message(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """MAILER_POOL_MAX_AGE: past its age, a connection is QUIT before the next send."""
    settings = settings_on(scripted.port, concurrency=1, pool_max_age=0.1)
    async with MessageClient(settings) as client:
        await client.send(mail(1))
        await asyncio.sleep(0.3)
        assert scripted.quits == 0  # the idle limit (10 s) has not passed
        await client.send(mail(2))
        assert scripted.quits == 1
    assert scripted.sessions == 2


async def test_a_connection_that_timed_out_is_never_reused(
    scripted_server: ScriptedServerFactory,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """No reply to a message's content: it times out, and the next uses a new session."""
    answered: list[str] = []

    def stall_first(line: str) -> str | None:
        if line == "<content>":
            answered.append(line)
            return "" if len(answered) == 1 else None
        return None

    async with scripted_server(answer=stall_first) as server:
        settings = settings_on(
            server.port, concurrency=1, message_timeout=0.3, max_attempts=1
        )
        async with MessageClient(settings) as client:
            with pytest.raises(DeliveryTimeoutError):
                await client.send(mail(1))
            result = await client.send(mail(2))
        assert result.is_sent
        assert server.sessions == 2


async def test_a_drop_after_the_content_is_ambiguous_and_both_cut_messages_retry(
    scripted_server: ScriptedServerFactory,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """The server drops the line at the end of message 2's content.

    Message 2 may have been delivered: that attempt is ambiguous, and the retry
    resends it with the same Message-ID. Message 3's envelope rode in the same
    write; it never got an answer, so that was an attempt too (not ambiguous),
    and its retry delivers it once.
    """
    ended: list[str] = []

    def drop_second(line: str) -> str | None:
        if line == "<content>":
            ended.append(line)
            return "<close>" if len(ended) == 2 else None
        return None

    async with scripted_server(answer=drop_second) as server:
        settings = settings_on(server.port, concurrency=1)
        async with MessageClient(settings) as client:
            results = await client.send_many(mail(n) for n in range(1, 5))
        assert [r.status for r in results] == ["sent", "sent", "sent", "sent"]
        assert [r.attempts for r in results] == [1, 2, 2, 1]
        assert [r.ambiguous for r in results] == [False, True, False, False]
        assert server.sessions == 2
        subjects = [m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in server.messages]
        assert sorted(subjects) == [b"n1", b"n2", b"n2", b"n3", b"n4"]
        copies = [m for m in server.messages if b"Subject: n2\r\n" in m]
        assert copies[0] == copies[1]  # the same bytes: the same Message-ID


async def test_a_421_ends_the_session_and_the_next_message_reconnects(
    scripted_server: ScriptedServerFactory,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """421 to RCPT: that message fails (transient) and the session is replaced."""
    async with scripted_server(
        answer=lambda line: (
            "421 4.7.0 closing, too busy"
            if line == "RCPT TO:<u1@example.test>"
            else None
        )
    ) as server:
        settings = settings_on(server.port, concurrency=1, max_attempts=1)
        async with MessageClient(settings) as client:
            with pytest.raises(RejectedError) as caught:
                await client.send(mail(1))
            result = await client.send(mail(2))
        assert caught.value.transient is True
        assert result.is_sent
        assert server.sessions == 2


async def test_a_refused_message_keeps_its_connection_without_pipelining(
    scripted_server: ScriptedServerFactory,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """One command at a time: after a 550 to MAIL, RSET and the same session goes on."""
    async with scripted_server(
        pipelining=False,
        answer=lambda line: (
            "550 5.7.1 not you" if line.startswith("MAIL FROM:") else None
        ),
    ) as server:
        async with MessageClient(settings_on(server.port, concurrency=1)) as client:
            first = await client.send_many([mail(1)])
            server.answer = lambda line: None
            second = await client.send(mail(2))
        assert first[0].reply is not None
        assert first[0].reply.code == 550
        assert second.is_sent
        assert server.sessions == 1
        assert ["RSET"] in server.reads
        assert server.quits == 1  # the one session ended with QUIT


async def test_nothing_listening_fails_every_message_and_opens_nothing(
    settings_for: Callable[..., MailerSettings], mail: Callable[..., Message]
) -> None:
    """A closed port: the first message fails, the batch stops (issue 12.6), none is lost."""
    inbox = await start_inbox()
    await inbox.aclose()
    async with MessageClient(settings_for(inbox, concurrency=2)) as client:
        results = await client.send_many(mail(n) for n in range(5))
    assert len(results) == 5
    assert not any(r.is_sent for r in results)
    assert [r.status for r in results] == [SendStatus.FAILED] + [SendStatus.PENDING] * 4
    assert all(r.error and "cannot reach" in r.error for r in results)
    assert all(r.transient for r in results[1:])


class SlowContent(InboxHandler):
    """Takes a while to accept each message's content."""

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: ServerEnvelope
    ) -> str:
        await asyncio.sleep(0.2)
        return await super().handle_DATA(server, session, envelope)


async def test_a_cancelled_send_leaves_the_connection_in_step(
    settings_for: Callable[..., MailerSettings], mail: Callable[..., Message]
) -> None:
    """A sender that gives up mid-transaction does not desynchronise the session."""
    async with await start_inbox(handler=SlowContent()) as inbox:
        async with MessageClient(settings_for(inbox, concurrency=1)) as client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.send(mail(1)), 0.05)
            result = await client.send(mail(2))
        assert result.is_sent
        assert [m.subject for m in inbox.messages] == ["n1", "n2"]
        assert inbox.sessions_opened == 1


async def test_a_closed_client_refuses_new_messages(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """After the client is closed, a send is an error, not a hang."""
    client = MessageClient(settings_on(scripted.port))
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.send(mail(1))
    assert scripted.sessions == 0


async def test_a_pipelined_connection_dropped_while_idle_is_replaced(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """The server closes an idle session: the next message goes out on a new one."""
    async with MessageClient(settings_on(scripted.port, concurrency=1)) as client:
        await client.send(mail(1))
        scripted.drop_all()
        result = await client.send(mail(2))
    assert result.is_sent
    assert scripted.sessions == 2
    assert len(scripted.messages) == 2


async def test_a_reused_connection_found_dead_at_the_envelope_is_retried(
    scripted_server: ScriptedServerFactory,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """Closed on the second MAIL FROM: a counted attempt, retried on a new session."""
    mails: list[str] = []

    def close_on_second_mail(line: str) -> str | None:
        if line.startswith("MAIL"):
            mails.append(line)
            return "<close>" if len(mails) == 2 else None
        return None

    async with scripted_server(answer=close_on_second_mail) as server:
        async with MessageClient(settings_on(server.port, concurrency=1)) as client:
            first = await client.send(mail(1))
            second = await client.send(mail(2))
        assert first.is_sent
        assert (second.is_sent, second.attempts, second.ambiguous) == (True, 2, False)
        assert server.sessions == 2
        assert len(server.messages) == 2


async def test_a_connection_closed_at_every_envelope_is_retried_only_max_attempts(
    scripted_server: ScriptedServerFactory,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """Dropped at each MAIL FROM: one session per attempt, then reported, no loop."""
    async with scripted_server(
        answer=lambda line: "<close>" if line.startswith("MAIL") else None
    ) as server:
        settings = settings_on(server.port, concurrency=1, max_attempts=3)
        async with MessageClient(settings) as client:
            with pytest.raises(ConnectError, match="closed the connection") as caught:
                await client.send(mail(1))
        assert caught.value.attempts == 3
        assert server.sessions == 3
        assert server.messages == []
