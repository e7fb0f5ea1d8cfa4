"""SMTP session correctness against real servers: replies, QUIT, RSET, HELO, errors.

Each hostile case runs against a real server on 127.0.0.1: the fault-injecting
test server (SMTPTestServer), `mailer inbox`'s own server, or the scripted
server of conftest.py where the grouping of commands on the wire matters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from mailer import (
    AuthenticationError,
    DeliveryTimeoutError,
    Message,
    MessageClient,
    RecipientsRefusedError,
    SendResult,
    TLSError,
    UnsupportedError,
)
from mailer.config.settings import MailerSettings
from mailer.inbox.server import start_inbox
from mailer.testing import END_OF_DATA, SMTPTestServer
from mailer.transports.smtp.connection import QUIT_TIMEOUT

ScriptedServerFactory = Callable[..., AbstractAsyncContextManager[Any]]
PASSWORD = "s3cret-pw"


def message(n: int = 1, **fields: Any) -> Message:
    values: dict[str, Any] = {
        "to": f"user{n}@example.test",
        "subject": f"Message {n}",
        "body": f"Body {n}\n",
    }
    values.update(fields)
    return Message(**values)


def scripted_settings(port: int, **overrides: object) -> MailerSettings:
    values: dict[str, object] = {
        "_env_file": None,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "none",
        "from_": "shop@example.test",
        "timeout": 5,
        "retry_backoff": 0.001,
        "retry_max_backoff": 0.005,
    }
    values.update(overrides)
    return MailerSettings(**values)  # type: ignore[arg-type]


def client_lines(transcript: list[str]) -> list[str]:
    """Return the commands a session's client sent, without their arguments."""
    return [line[3:].split(" ")[0] for line in transcript if line.startswith("C: ")]


async def send_one(
    server: SMTPTestServer, mail: Message, **settings: Any
) -> SendResult:
    """Send one message, one attempt, and close the client (QUIT)."""
    async with MessageClient(server.settings(max_attempts=1, **settings)) as client:
        return await client.send(mail)


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll a cheap server-side condition until it holds."""
    async with asyncio.timeout(within):
        # Sessions end as the loop gets to them; there is no event to await.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# -- 11.3: a malformed reply after the content is ambiguous ----------------------


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("form", ["garbage", "too_long", "no_code"])
async def test_a_malformed_reply_after_a_stored_message_is_ambiguous(
    form: str, pipelining: bool
) -> None:
    """Stored, then a bad line after the dot: resent with its Message-ID, ambiguous."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        rule = server.faults.malformed_final_reply(form, times=1)
        async with MessageClient(server.settings()) as client:
            result = await client.send(message())
    rule.assert_fired(1)
    assert (result.is_sent, result.attempts, result.ambiguous) == (True, 2, True)
    first, second = server.outbox
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.message["Message-ID"] == result.message_id


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_malformed_reply_before_the_content_is_not_ambiguous(
    pipelining: bool,
) -> None:
    """Garbage instead of DATA's 354: the content never left, so a resend is no copy."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        rule = server.faults.garbage("DATA", times=1)
        async with MessageClient(server.settings()) as client:
            result = await client.send(message())
    rule.assert_fired(1)
    assert (result.is_sent, result.attempts, result.ambiguous) == (True, 2, False)
    assert len(server.outbox) == 1


async def test_a_malformed_final_reply_in_a_batch_is_counted_ambiguous() -> None:
    """In a pipelined batch, only the message whose reply was malformed is ambiguous."""
    async with SMTPTestServer() as server:
        server.faults.malformed_final_reply("too_long", times=1, after=2)
        async with MessageClient(server.settings(concurrency=1)) as client:
            results = await client.send_many(message(n) for n in range(1, 6))
    assert all(r.is_sent for r in results)
    assert [r.ambiguous for r in results] == [False, False, True, False, False]
    assert len(server.outbox) == 6  # message 3 twice, counted


# -- 11.13: QUIT is bounded ------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_server_that_never_answers_quit_costs_seconds_not_the_timeout(
    pipelining: bool,
) -> None:
    """No reply to QUIT: closing waits QUIT_TIMEOUT (a few seconds), not MAILER_TIMEOUT."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        rule = server.faults.delay("QUIT", 120)
        client = MessageClient(server.settings(timeout=60))
        result = await client.send(message())
        started = time.monotonic()
        await client.aclose()
        elapsed = time.monotonic() - started
    rule.assert_fired(1)
    assert result.is_sent
    assert QUIT_TIMEOUT <= 5
    assert QUIT_TIMEOUT - 0.1 < elapsed < QUIT_TIMEOUT + 2


# -- 12.1: the greeting timeout is named -----------------------------------------


async def test_a_server_that_never_greets_is_reported_as_a_greeting_timeout() -> None:
    """Accepted, then silence: the error names the greeting and its setting."""
    async with SMTPTestServer() as server:
        server.faults.no_greeting()
        with pytest.raises(DeliveryTimeoutError) as caught:
            await send_one(server, message(), greeting_timeout=0.3)
    text = str(caught.value)
    assert "greeting" in text
    assert "MAILER_GREETING_TIMEOUT" in text
    assert "timed out connecting" not in text
    assert caught.value.transient is True


async def test_starttls_against_an_implicit_tls_port_suggests_tls() -> None:
    """STARTTLS mode on a port that waits for a TLS handshake: the hint says tls."""
    async with SMTPTestServer(tls="tls") as server:
        with pytest.raises(DeliveryTimeoutError) as caught:
            await send_one(server, message(), smtp_tls="starttls", greeting_timeout=0.3)
    assert "MAILER_GREETING_TIMEOUT" in str(caught.value)
    assert "MAILER_SMTP_TLS=tls" in str(caught.value)


# -- 12.3: HELO when EHLO is refused ---------------------------------------------


@pytest.mark.parametrize("code", [500, 502])
async def test_a_server_refusing_ehlo_gets_helo_and_the_message(code: int) -> None:
    """EHLO answered 500/502: HELO follows, and the message goes without extensions."""
    async with SMTPTestServer() as server:
        rule = server.faults.reply("EHLO", code, "5.5.2 Command not recognized")
        result = await send_one(server, message(body="Zoë\n"))
    rule.assert_fired(1)
    assert result.is_sent
    mail = server.outbox.one()
    assert mail.mail_options == ()  # no SIZE=, no BODY=8BITMIME: HELO has none
    assert mail.session is not None
    assert mail.session.helo is not None
    assert client_lines(server.transcripts[0])[:2] == ["EHLO", "HELO"]


async def test_after_helo_commands_go_one_at_a_time(
    scripted_server: ScriptedServerFactory,
) -> None:
    """No EHLO, so no PIPELINING: MAIL, RCPT and DATA each wait for their reply."""

    def refuse_ehlo(line: str) -> str | None:
        return "502 5.5.2 no EHLO" if line.startswith("EHLO") else None

    async with (
        scripted_server(pipelining=True, answer=refuse_ehlo) as server,
        MessageClient(scripted_settings(server.port)) as client,
    ):
        results = await client.send_many([message(1), message(2)])
    assert all(r.is_sent for r in results)
    assert ["HELO"] in server.reads
    assert all(len(read) == 1 for read in server.reads if read)


async def test_a_helo_only_server_fails_a_required_starttls_closed() -> None:
    """EHLO refused, HELO offers no STARTTLS: nothing is sent, the error says why."""
    async with SMTPTestServer(tls="starttls", auth={"svc": PASSWORD}) as server:
        server.faults.reply("EHLO", 502, "5.5.2 Command not recognized")
        with pytest.raises(TLSError) as caught:
            await send_one(server, message())
    text = str(caught.value)
    assert "EHLO" in text
    assert "HELO" in text
    assert "MAILER_SMTP_TLS" in text
    commands = client_lines(server.transcripts[0])
    assert "STARTTLS" not in commands
    assert "AUTH" not in commands
    assert "MAIL" not in commands
    server.outbox.assert_nothing_sent()


# -- 12.4 and 14: QUIT whenever the server can hear it; keep refused sessions ----


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_refused_recipient_keeps_the_session_which_ends_with_quit(
    pipelining: bool,
) -> None:
    """550 to the only recipient: RSET, the next message on the same session, QUIT."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        server.faults.reply("RCPT", 550, "5.1.1 No such user", recipient="gone@x.test")
        async with MessageClient(server.settings(concurrency=1)) as client:
            with pytest.raises(RecipientsRefusedError) as refused:
                await client.send(message(1, to="gone@x.test"))
            sent = await client.send(message(2))
    assert refused.value.refused["gone@x.test"].code == 550
    assert sent.is_sent
    assert server.sessions_opened == 1
    commands = client_lines(server.transcripts[0])
    assert "RSET" in commands
    assert commands[-1] == "QUIT"


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(
            lambda f: f.reply("MAIL", 550, "5.7.1 Not you", times=1), id="MAIL"
        ),
        pytest.param(
            lambda f: f.reply("DATA", 554, "5.5.1 No thanks", times=1), id="DATA"
        ),
        pytest.param(
            lambda f: f.reply(END_OF_DATA, 554, "5.7.1 Spam", times=1), id="END_OF_DATA"
        ),
    ],
)
async def test_a_refused_message_keeps_the_session(
    plan: Callable[[Any], Any], pipelining: bool
) -> None:
    """A 5xx at MAIL, DATA or the final dot fails that message; the session goes on."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        rule = plan(server.faults)
        async with MessageClient(server.settings(concurrency=1)) as client:
            results = await client.send_many(message(n) for n in range(1, 6))
    rule.assert_fired(1)
    assert [r.status for r in results] == ["failed", "sent", "sent", "sent", "sent"]
    assert results[0].reply is not None
    assert results[0].reply.code in (550, 554)
    assert results[0].ambiguous is False
    assert server.sessions_opened == 1
    assert [m.subject for m in server.outbox] == [f"Message {n}" for n in range(2, 6)]
    assert client_lines(server.transcripts[0])[-1] == "QUIT"


async def test_a_refused_envelope_puts_rset_in_the_next_group(
    scripted_server: ScriptedServerFactory,
) -> None:
    """RFC 2920: RSET opens the next pipelined group; replies stay in step."""

    def refuse(line: str) -> str | None:
        return (
            "550 5.1.1 no such user" if line == "RCPT TO:<gone@example.test>" else None
        )

    async with scripted_server(answer=refuse) as server:
        settings = scripted_settings(server.port, concurrency=1)
        async with MessageClient(settings) as client:
            results = await client.send_many(
                [
                    message(1),
                    message(2, to="gone@example.test"),
                    message(3, to=["gone@example.test", "u3@example.test"]),
                    message(4),
                ]
            )
    assert [r.status for r in results] == ["sent", "failed", "sent", "sent"]
    assert results[1].refused["gone@example.test"].code == 550
    assert results[2].accepted == ("u3@example.test",)
    assert server.sessions == 1
    assert ["RSET", "MAIL", "RCPT", "RCPT", "DATA"] in server.reads
    assert len(server.messages) == 3


async def test_a_size_check_after_connecting_costs_no_connection() -> None:
    """A message over the server's SIZE fails before MAIL; the session carries the rest."""
    async with (
        SMTPTestServer(size_limit=4000) as server,
        MessageClient(server.settings(concurrency=1)) as client,
    ):
        results = await client.send_many(
            [message(1), message(2, body="x" * 8000 + "\n"), message(3)]
        )
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert "SIZE" in (results[1].error or "")
    assert server.sessions_opened == 1
    assert client_lines(server.transcripts[0])[-1] == "QUIT"


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_smtputf8_check_after_connecting_ends_with_quit(
    pipelining: bool,
) -> None:
    """No SMTPUTF8 for a non-ASCII mailbox: refused before MAIL, then QUIT, not a drop."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        server.faults.hide_extensions("SMTPUTF8")
        with pytest.raises(UnsupportedError, match="SMTPUTF8"):
            await send_one(server, message(to="zoë@example.test"))
    assert client_lines(server.transcripts[0]) == ["EHLO", "QUIT"]


async def test_a_session_out_of_step_is_closed_with_quit() -> None:
    """Garbage at MAIL: that session is not reused, but it still hears QUIT."""
    async with SMTPTestServer() as server:
        server.faults.garbage("MAIL", times=1)
        async with MessageClient(server.settings(concurrency=1)) as client:
            result = await client.send(message())
        await wait_until(lambda: server.active_sessions == 0)
    assert (result.is_sent, result.attempts) == (True, 2)
    assert server.sessions_opened == 2
    assert client_lines(server.transcripts[0])[-1] == "QUIT"


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    ("command", "reply"),
    [("MAIL FROM", "354 go ahead"), ("DATA", "250 2.0.0 ok"), ("RCPT TO", "220 hi")],
)
async def test_a_reply_out_of_step_closes_the_session_and_the_retry_goes_on(
    scripted_server: ScriptedServerFactory, pipelining: bool, command: str, reply: str
) -> None:
    """A reply no server gives in step (354 to MAIL, 250 to DATA): a new session."""
    answered: list[str] = []

    def once(line: str) -> str | None:
        if line.startswith(command) and not answered:
            answered.append(line)
            return reply
        return None

    async with scripted_server(pipelining=pipelining, answer=once) as server:
        settings = scripted_settings(server.port, concurrency=1)
        async with MessageClient(settings) as client:
            result = await client.send(message())
    assert (result.is_sent, result.attempts, result.ambiguous) == (True, 2, False)
    assert server.sessions == 2
    assert len(server.messages) == 1


# -- 12.5: TLS and AUTH mismatches name the setting to change --------------------


async def test_starttls_against_mailer_inbox_says_to_set_tls_none() -> None:
    """The example .env (starttls + a login) against `mailer inbox`: set none."""
    async with await start_inbox() as inbox:
        settings = scripted_settings(
            inbox.port,
            smtp_tls="starttls",
            smtp_username="shop",
            smtp_password=PASSWORD,
            max_attempts=1,
        )
        async with MessageClient(settings) as client:
            with pytest.raises(TLSError) as caught:
                await client.send(message())
    text = str(caught.value)
    assert "does not offer STARTTLS" in text
    assert "MAILER_SMTP_TLS=none" in text
    assert PASSWORD not in text


async def test_a_login_against_mailer_inbox_says_to_leave_the_credentials_empty() -> (
    None
):
    """tls=none and a login against a server with no AUTH: name the keys to empty."""
    async with await start_inbox() as inbox:
        settings = scripted_settings(
            inbox.port,
            smtp_tls="none",
            smtp_username="shop",
            smtp_password=PASSWORD,
            max_attempts=1,
        )
        async with MessageClient(settings) as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.send(message())
    text = str(caught.value)
    assert "offers no AUTH" in text
    assert "MAILER_SMTP_USERNAME" in text
    assert "MAILER_SMTP_PASSWORD" in text
    assert PASSWORD not in text


async def test_a_530_starttls_required_with_tls_none_says_to_set_starttls() -> None:
    """530 "Must issue a STARTTLS command first" while the setting is none."""
    async with SMTPTestServer(tls="starttls", require_starttls=True) as server:
        with pytest.raises(TLSError) as caught:
            await send_one(server, message(), smtp_tls="none")
    assert "MAILER_SMTP_TLS=starttls" in str(caught.value)
    assert caught.value.reply is not None
    assert caught.value.reply.code == 530
    server.outbox.assert_nothing_sent()


# -- 11.10 (the transport half): cancellation ends everything promptly ----------


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_batch_cancelled_while_the_server_stalls_ends_promptly(
    pipelining: bool,
) -> None:
    """Cancelled mid-flight against a silent server: the client closes in seconds."""
    async with SMTPTestServer(pipelining=pipelining) as server:
        # Two messages go through (the batch then opens all its connections).
        stall = server.faults.delay(END_OF_DATA, 120, after=2)
        settings = server.settings(
            concurrency=3, timeout=60, message_timeout=120, max_attempts=1
        )
        client = MessageClient(settings)
        batch = asyncio.create_task(client.send_many(message(n) for n in range(30)))
        await wait_until(lambda: stall.fired == 3)
        batch.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await batch
        async with asyncio.timeout(10):
            await client.aclose()
        elapsed = time.monotonic() - started
        await wait_until(lambda: server.active_sessions == 0)
    assert elapsed < QUIT_TIMEOUT + 2
    assert len(server.outbox) == 2


async def test_a_task_owning_a_client_cancelled_mid_flight_ends_promptly() -> None:
    """`async with MessageClient` in a task cancelled while replies are due: it ends."""
    async with SMTPTestServer() as server:
        stall = server.faults.delay(END_OF_DATA, 120, after=2)
        settings = server.settings(concurrency=2, message_timeout=120)

        async def run() -> None:
            async with MessageClient(settings) as client:
                await client.send_many(message(n) for n in range(10))

        task = asyncio.create_task(run())
        await wait_until(lambda: stall.fired == 2)
        task.cancel()
        started = time.monotonic()
        async with asyncio.timeout(10):
            with pytest.raises(asyncio.CancelledError):
                await task
        elapsed = time.monotonic() - started
        await wait_until(lambda: server.active_sessions == 0)
    assert elapsed < QUIT_TIMEOUT + 2


async def test_closing_while_one_sender_gave_up_still_sends_the_other() -> None:
    """aclose: the lane stuck on abandoned work stops; a waiting message still goes."""
    async with SMTPTestServer(pipelining=False) as server:
        stall = server.faults.delay(END_OF_DATA, 120, times=1)
        client = MessageClient(server.settings(concurrency=1, message_timeout=120))
        first = asyncio.create_task(client.send(message(1)))
        await wait_until(lambda: stall.fired == 1)
        second = asyncio.create_task(client.send(message(2)))
        await asyncio.sleep(0.05)  # queued behind the stalled message
        first.cancel()
        started = time.monotonic()
        async with asyncio.timeout(10):
            await client.aclose()
            result = await second
        elapsed = time.monotonic() - started
    assert result.is_sent
    assert [m.subject for m in server.outbox] == ["Message 2"]
    assert elapsed < QUIT_TIMEOUT + 2
