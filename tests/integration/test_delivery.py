"""Retries, timeouts and the ambiguous case against a real, fault-injecting SMTP server."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from mailer import (
    AuthenticationError,
    DeliveryTimeoutError,
    Message,
    MessageClient,
    Reply,
    SendStatus,
)
from mailer.config.settings import MailerSettings
from mailer.replies import RecipientStatus
from mailer.testing import END_OF_DATA, SMTPTestServer

THREE = ["ann@example.test", "bob@example.test", "cy@example.test"]


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    ("code", "text"),
    [
        (452, "4.2.2 mailbox full"),
        # RFC 821's code for a full transaction: temporary (RFC 5321 4.5.3.1.10).
        (552, "5.5.3 Too many recipients"),
    ],
)
async def test_a_deferral_for_one_of_three_recipients_resends_to_that_one_only(
    code: int, text: str, pipelining: bool, message: Callable[..., Message]
) -> None:
    """Bob deferred: ann and cy get it once; a second transaction goes to bob alone."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        rule = server.faults.reply("RCPT", code, text, recipient=THREE[1], times=1)
        async with MessageClient(server.settings()) as client:
            result = await client.send(message(to=THREE))
    rule.assert_fired(1)
    assert [m.envelope.rcpt_tos for m in server.outbox] == [
        (THREE[0], THREE[2]),
        (THREE[1],),
    ]
    first, second = server.outbox
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert result.status is SendStatus.SENT
    assert result.attempts == 2
    assert result.recipients == dict.fromkeys(THREE, RecipientStatus.ACCEPTED)


async def test_a_552_for_the_only_recipient_is_retried_too(
    message: Callable[..., Message],
) -> None:
    """Every recipient refused, all with 552 5.5.3: transient, so a second attempt."""
    async with SMTPTestServer() as server:
        server.faults.reply("RCPT", 552, "5.5.3 Too many recipients", times=1)
        async with MessageClient(server.settings()) as client:
            result = await client.send(message())
    assert (result.is_sent, result.attempts) == (True, 2)
    assert len(server.outbox) == 1


async def test_a_550_recipient_is_never_retried_and_reported_with_the_reply(
    message: Callable[..., Message],
) -> None:
    """550 for bob, every time: one transaction, bob rejected with the server's words."""
    async with SMTPTestServer() as server:
        rule = server.faults.reply(
            "RCPT", 550, "5.1.1 <bob@example.test>: no such user", recipient=THREE[1]
        )
        async with MessageClient(server.settings()) as client:
            result = await client.send(message(to=THREE))
    rule.assert_fired(1)
    assert len(server.outbox) == 1
    assert result.attempts == 1
    assert result.refused == {
        THREE[1]: Reply(550, "5.1.1 <bob@example.test>: no such user")
    }
    assert result.recipients[THREE[1]] is RecipientStatus.REJECTED
    assert result.to_report()["refused"][THREE[1]]["enhanced_status"] == "5.1.1"


async def test_a_421_at_rcpt_is_retried_on_a_new_connection_without_data(
    message: Callable[..., Message],
) -> None:
    """421 closes the session: no DATA is sent on it; attempt 2 opens a fresh one."""
    async with SMTPTestServer() as server:
        server.faults.reply("RCPT", 421, "4.7.0 closing, try later", times=1)
        async with MessageClient(server.settings(concurrency=1)) as client:
            result = await client.send(message())
    assert result.is_sent
    assert result.attempts == 2
    assert server.sessions_opened == 2
    assert not any(line.startswith("C: DATA") for line in server.transcripts[0])
    assert server.outbox.one().session.number == 2  # type: ignore[union-attr]


async def test_a_451_after_the_dot_is_retried_and_not_ambiguous(
    message: Callable[..., Message],
) -> None:
    """The server answered 451: not delivered, so the resend is no duplicate."""
    async with SMTPTestServer() as server:
        server.faults.reply(END_OF_DATA, 451, "4.3.0 try again", times=1)
        async with MessageClient(server.settings()) as client:
            result = await client.send(message())
    assert (result.attempts, result.ambiguous) == (2, False)
    assert len(server.outbox) == 1


async def test_a_hang_up_after_the_delivered_dot_is_ambiguous_and_resent_with_its_id(
    message: Callable[..., Message],
) -> None:
    """Delivered, then no reply: resent with the same Message-ID, flagged ambiguous."""
    async with SMTPTestServer() as server:
        server.faults.disconnect(after=END_OF_DATA, keep=True, times=1)
        async with MessageClient(server.settings()) as client:
            [result] = await client.send_many([message()])
    assert result.is_sent
    assert (result.attempts, result.ambiguous) == (2, True)
    assert result.to_report()["ambiguous"] is True
    first, second = server.outbox
    assert (
        first.message["Message-ID"]
        == second.message["Message-ID"]
        == (result.message_id)
    )


async def test_a_hang_up_before_data_is_retried_and_not_ambiguous(
    message: Callable[..., Message],
) -> None:
    """Disconnect at MAIL: nothing could be delivered; one copy, not ambiguous."""
    async with SMTPTestServer() as server:
        server.faults.disconnect(after="MAIL", times=1)
        async with MessageClient(server.settings()) as client:
            result = await client.send(message())
    assert (result.attempts, result.ambiguous) == (2, False)
    assert len(server.outbox) == 1


async def test_a_hang_up_in_the_middle_of_data_counts_as_ambiguous(
    message: Callable[..., Message],
) -> None:
    """Once the content is on its way, no reply means 'may have been delivered'."""
    async with SMTPTestServer() as server:
        server.faults.disconnect(during="DATA", after_bytes=10, times=1)
        async with MessageClient(server.settings()) as client:
            result = await client.send(message())
    # The client wrote the whole message before the server hung up: it cannot
    # tell this from a loss after the dot, so it says so (and resends).
    assert (result.attempts, result.ambiguous) == (2, True)
    assert len(server.outbox) == 1


@contextlib.contextmanager
def listener_that_never_accepts() -> Iterator[int]:
    """Yield the port of a 127.0.0.1 listener whose accept queue is full.

    Nobody accepts, so once the queue is full the kernel drops new SYNs and a
    connect hangs, as it does to a host behind a firewall that drops packets.
    """
    fillers: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        try:
            for _ in range(16):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                with socket.socket() as probe:
                    probe.settimeout(0.2)
                    try:
                        probe.connect(("127.0.0.1", port))
                    except TimeoutError:
                        break  # full: the next connect hangs
                    fillers.append(probe.dup())
            else:
                raise AssertionError("the accept queue never filled up")
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def test_a_connect_that_hangs_costs_the_connect_timeout(
    settings_for: Callable[..., MailerSettings], message: Callable[..., Message]
) -> None:
    """No SYN-ACK: each attempt costs MAILER_CONNECT_TIMEOUT, not the greeting's."""
    with listener_that_never_accepts() as port:
        settings = settings_for(
            port,
            from_="sender@example.test",
            connect_timeout=0.3,
            greeting_timeout=30,
            timeout=30,
            max_attempts=2,
            retry_backoff=0.01,
            retry_max_backoff=60,  # the default (make_settings has 0.005, under 0.01)
        )
        started = time.monotonic()
        async with MessageClient(settings) as client:
            with pytest.raises(
                DeliveryTimeoutError,
                match=r"timed out connecting .* \(MAILER_CONNECT_TIMEOUT\)",
            ):
                await client.send(message())
        elapsed = time.monotonic() - started
    assert 0.55 < elapsed < 2.0


async def test_a_server_that_never_greets_costs_the_greeting_timeout(
    message: Callable[..., Message],
) -> None:
    """Accepts, says nothing: each attempt costs MAILER_GREETING_TIMEOUT, not timeout."""
    async with SMTPTestServer() as server:
        server.faults.no_greeting()
        started = time.monotonic()
        async with MessageClient(
            server.settings(greeting_timeout=0.3, timeout=30, max_attempts=2)
        ) as client:
            with pytest.raises(DeliveryTimeoutError) as caught:
                await client.send(message())
        elapsed = time.monotonic() - started
    assert caught.value.attempts == 2
    assert caught.value.transient is True
    assert 0.55 < elapsed < 2.0


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_command_that_is_never_answered_costs_the_command_timeout(
    pipelining: bool, message: Callable[..., Message]
) -> None:
    """MAIL never answered: MAILER_TIMEOUT, then the connection is dropped."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        server.faults.delay("MAIL", 30, times=1)
        started = time.monotonic()
        async with MessageClient(
            server.settings(timeout=0.3, max_attempts=2)
        ) as client:
            result = await client.send(message())
        elapsed = time.monotonic() - started
    assert (result.attempts, result.ambiguous) == (2, False)
    assert 0.25 < elapsed < 2.0
    assert server.sessions_opened == 2


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_final_reply_that_never_comes_costs_the_message_timeout(
    pipelining: bool, message: Callable[..., Message]
) -> None:
    """No reply after the dot: MAILER_MESSAGE_TIMEOUT, and the message is ambiguous."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        server.faults.delay(END_OF_DATA, 30)
        started = time.monotonic()
        async with MessageClient(
            server.settings(timeout=30, message_timeout=0.4, max_attempts=1)
        ) as client:
            with pytest.raises(DeliveryTimeoutError) as caught:
                await client.send(message())
        elapsed = time.monotonic() - started
    assert 0.35 < elapsed < 2.0
    assert caught.value.ambiguous is True


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_transaction_is_bounded_as_a_whole_by_the_message_timeout(
    pipelining: bool, message: Callable[..., Message]
) -> None:
    """Each reply in time (0.2 s < 0.3 s), together too slow: cut at 0.5 s."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        for command in ("MAIL", "RCPT", "DATA"):
            server.faults.delay(command, 0.2)
        settings = server.settings(timeout=0.3, message_timeout=0.5, max_attempts=1)
        started = time.monotonic()
        async with MessageClient(settings) as client:
            with pytest.raises(DeliveryTimeoutError):
                await client.send(message())
        elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 1.5  # (each reply alone would have been in time)
    assert len(server.outbox) == 0


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_slow_final_reply_gets_the_message_timeout_not_the_command_one(
    pipelining: bool, message: Callable[..., Message]
) -> None:
    """0.6 s to answer the dot, MAILER_TIMEOUT 0.2 s: still one attempt, delivered."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        server.faults.delay(END_OF_DATA, 0.6)
        settings = server.settings(timeout=0.2, message_timeout=5, max_attempts=1)
        async with MessageClient(settings) as client:
            result = await client.send(message())
    assert (result.is_sent, result.attempts, result.ambiguous) == (True, 1, False)
    assert len(server.outbox) == 1


async def test_a_refused_login_stops_the_batch_after_one_login(
    message: Callable[..., Message],
) -> None:
    """535: one AUTH tried for the whole batch (lockout risk), every message reported."""
    async with SMTPTestServer(tls="starttls", auth={"svc": "right"}) as server:
        settings = server.settings(smtp_password="wrong", concurrency=5)
        async with MessageClient(settings) as client:
            results = await client.send_many([message(n) for n in range(12)])
    auth_lines = [
        line
        for transcript in server.transcripts
        for line in transcript
        if line.startswith("C: AUTH")
    ]
    assert len(auth_lines) == 1
    statuses = [r.status for r in results]
    assert statuses.count(SendStatus.FAILED) == 1
    assert statuses.count(SendStatus.PENDING) == 11
    [failed] = [r for r in results if r.status is SendStatus.FAILED]
    assert failed.reply is not None
    assert failed.reply.code == 535
    assert len(server.outbox) == 0


async def test_a_refused_login_is_raised_by_send_after_one_attempt(
    message: Callable[..., Message],
) -> None:
    """send(): AuthenticationError at once, not after MAILER_MAX_ATTEMPTS logins."""
    async with SMTPTestServer(tls="starttls", auth={"svc": "right"}) as server:
        client = MessageClient(server.settings(smtp_password="wrong"))
        async with client:
            with pytest.raises(AuthenticationError) as caught:
                await client.send(message())
    assert caught.value.attempts == 1
    assert server.sessions_opened == 1


async def test_a_rate_limit_421_is_waited_out(message: Callable[..., Message]) -> None:
    """421 past 2 messages per 0.3 s: the batch backs off and everything is sent."""
    async with SMTPTestServer() as server:
        rule = server.faults.rate_limit(2, per=0.3)
        settings = server.settings(
            concurrency=1, max_attempts=20, retry_backoff=0.05, retry_max_backoff=0.2
        )
        async with MessageClient(settings) as client:
            results = await client.send_many([message(n) for n in range(6)])
    assert all(r.is_sent for r in results)
    assert rule.fired >= 1
    assert sorted(m.subject for m in server.outbox) == sorted(
        f"Message {n}" for n in range(6)
    )
    assert sum(r.attempts for r in results) == 6 + rule.fired


async def test_a_refused_mechanism_moves_on_to_the_next_one(
    message: Callable[..., Message],
) -> None:
    """504 to AUTH PLAIN refuses the mechanism, not the password: LOGIN is tried."""
    async with SMTPTestServer(tls="starttls", auth={"svc": "right"}) as server:
        rule = server.faults.reply(
            "AUTH", 504, "5.5.4 mechanism not supported", times=1
        )
        async with MessageClient(server.settings()) as client:
            result = await client.send(message())
    assert result.is_sent
    assert [f.argument for f in rule.firings] == ["PLAIN ***"]
    assert server.outbox.one().session.auth_username == "svc"  # type: ignore[union-attr]


async def test_an_unexpected_reply_drops_the_connection_and_is_retried(
    message: Callable[..., Message],
) -> None:
    """A line that is not SMTP at MAIL: that connection is closed; attempt 2 works."""
    async with SMTPTestServer() as server:
        rule = server.faults.garbage("MAIL", "*** not SMTP ***", times=1)
        async with MessageClient(server.settings(concurrency=1)) as client:
            result = await client.send(message())
    rule.assert_fired(1)
    assert (result.attempts, result.ambiguous) == (2, False)
    assert server.sessions_opened == 2
    assert server.outbox.one().session.number == 2  # type: ignore[union-attr]
