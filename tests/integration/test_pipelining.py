"""PIPELINING (RFC 2920) over real sockets: grouped commands, exact replies, chaining."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as ServerEnvelope

from mailer import DataRefusedError, Message, MessageClient, SenderRefusedError
from mailer.config.settings import MailerSettings
from mailer.inbox.server import InboxHandler, start_inbox

ScriptedServerFactory = Callable[..., AbstractAsyncContextManager[Any]]


async def test_mail_rcpt_and_data_go_out_in_one_write(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """With PIPELINING, MAIL FROM, every RCPT TO and DATA arrive together."""
    async with MessageClient(settings_on(scripted.port)) as client:
        result = await client.send(
            mail(1, to=["a@example.test", "b@example.test"], cc="c@example.test")
        )
    assert result.is_sent
    assert ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"] in scripted.reads
    assert result.accepted == ("a@example.test", "b@example.test", "c@example.test")


async def test_without_pipelining_commands_go_one_at_a_time(
    scripted_server: ScriptedServerFactory,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """A server that does not offer PIPELINING gets one command per round trip."""
    async with (
        scripted_server(pipelining=False) as server,
        MessageClient(settings_on(server.port)) as client,
    ):
        result = await client.send(mail(1, to=["a@example.test", "b@example.test"]))
    assert result.is_sent
    assert all(len(read) == 1 for read in server.reads), server.reads
    assert [read[0] for read in server.reads[1:6]] == [
        "MAIL",
        "RCPT",
        "RCPT",
        "DATA",
        "<content>",
    ]


async def test_the_next_envelope_rides_with_the_content(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """In a batch, a message's content and the next one's envelope share a write."""
    async with MessageClient(settings_on(scripted.port, concurrency=1)) as client:
        results = await client.send_many(mail(n) for n in range(6))
    assert all(result.is_sent for result in results)
    assert len(scripted.messages) == 6
    chained = [read for read in scripted.reads if read[:2] == ["<content>", "MAIL"]]
    assert chained, scripted.reads
    assert chained[0] == ["<content>", "MAIL", "RCPT", "DATA"]
    assert scripted.sessions == 1


async def test_each_recipient_gets_its_own_reply_back(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """Refusals in a group are matched to the right recipients, codes and texts."""
    refusals = {
        "RCPT TO:<gone@example.test>": "550 5.1.1 gone: no such user",
        "RCPT TO:<full@example.test>": "452 4.2.2 full: mailbox full",
    }
    scripted.answer = refusals.get
    to = ["a@example.test", "gone@example.test", "b@example.test", "full@example.test"]
    # One attempt: the 452 recipient stays deferred (a retry would go to it).
    async with MessageClient(settings_on(scripted.port, max_attempts=1)) as client:
        result = await client.send(mail(1, to=to))
    assert result.accepted == ("a@example.test", "b@example.test")
    assert {rcpt: (r.code, r.text) for rcpt, r in result.refused.items()} == {
        "gone@example.test": (550, "5.1.1 gone: no such user"),
        "full@example.test": (452, "4.2.2 full: mailbox full"),
    }
    assert {rcpt: status.value for rcpt, status in result.recipients.items()} == {
        "a@example.test": "accepted",
        "gone@example.test": "rejected",
        "b@example.test": "accepted",
        "full@example.test": "deferred",
    }
    assert (result.status, result.transient) == ("failed", True)


async def test_every_recipient_refused_fails_that_message_and_keeps_its_connection(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """All RCPT refused: that message fails; RSET ends it and the session goes on."""
    scripted.answer = lambda line: (
        "550 5.1.1 no such user" if line == "RCPT TO:<gone@example.test>" else None
    )
    messages = [mail(1, to="gone@example.test"), mail(2), mail(3)]
    async with MessageClient(settings_on(scripted.port, concurrency=1)) as client:
        results = await client.send_many(messages)
    assert [r.status for r in results] == ["failed", "sent", "sent"]
    assert results[0].refused["gone@example.test"].code == 550
    assert results[0].transient is False
    # Alone: until one message went through, a batch sends one at a time.
    assert ["RSET"] in scripted.reads
    assert scripted.sessions == 1  # a refusal leaves the session in step
    assert len(scripted.messages) == 2


async def test_a_refused_sender_is_reported_with_its_reply(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """552 to MAIL FROM: SenderRefusedError with the server's code and text."""
    scripted.answer = lambda line: (
        "552 5.3.4 message too big" if line.startswith("MAIL") else None
    )
    async with MessageClient(settings_on(scripted.port)) as client:
        with pytest.raises(SenderRefusedError) as caught:
            await client.send(mail(1))
    assert caught.value.reply is not None
    assert (caught.value.reply.code, caught.value.reply.text) == (
        552,
        "5.3.4 message too big",
    )
    assert scripted.messages == []


async def test_a_refusal_after_the_content_fails_only_that_message(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """451 to message 2's content: that attempt fails; the rest are delivered.

    Message 3's envelope rode with message 2's content and goes on; the final
    reply ended message 2's transaction, so the session stays in step and
    carries message 4 and the retry of message 2 as well.
    """
    answered: list[int] = []

    def refuse_second(line: str) -> str | None:
        if line == "<content>":
            answered.append(1)
            if len(answered) == 2:
                return "451 4.3.0 try again later"
        return None

    scripted.answer = refuse_second
    async with MessageClient(settings_on(scripted.port, concurrency=1)) as client:
        results = await client.send_many(mail(n) for n in range(4))
    assert [r.status for r in results] == ["sent", "sent", "sent", "sent"]
    assert [r.attempts for r in results] == [1, 2, 1, 1]
    assert results[1].ambiguous is False  # the server answered: not delivered
    assert scripted.sessions == 1
    assert sum(read.count("<content>") for read in scripted.reads) == 5
    assert "RSET" not in {verb for read in scripted.reads for verb in read}


async def test_a_data_refusal_before_the_content_is_a_data_error(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """554 to DATA itself: DataRefusedError, and the content is never sent."""
    scripted.answer = lambda line: "554 5.5.1 no thanks" if line == "DATA" else None
    async with MessageClient(settings_on(scripted.port)) as client:
        with pytest.raises(DataRefusedError, match="554 5.5.1 no thanks"):
            await client.send(mail(1))
    assert scripted.messages == []


class PipeliningHandler(InboxHandler):
    """aiosmtpd's inbox, offering PIPELINING (it reads commands as a stream)."""

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: ServerEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


async def test_dots_and_mixed_line_ends_arrive_intact_through_pipelining(
    settings_on: Callable[..., MailerSettings], mail: Callable[..., Message]
) -> None:
    """Content written by the pipelined path is dot-stuffed and CRLF-normalised."""
    body = ".\n..\r\n.hidden\rnext\n" + "x" * 2000 + "\n.\n"
    html = "<p>.</p>\r\n.\n"
    async with await start_inbox(handler=PipeliningHandler()) as inbox:
        async with MessageClient(settings_on(inbox.port)) as client:
            results = await client.send_many(
                [mail(1, body=body, html=html), mail(2, body=".")]
            )
        assert all(r.is_sent for r in results)
        by_subject = {m.subject: m for m in inbox.messages}
    assert by_subject["n1"].text == body.replace("\r\n", "\n").replace("\r", "\n")
    assert by_subject["n1"].html == html.replace("\r\n", "\n")
    assert by_subject["n2"].text == "."


async def test_data_opened_with_no_recipient_is_abandoned_not_sent(
    scripted: Any,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """A server answering 354 although it refused every RCPT gets no content."""
    scripted.answer = lambda line: (
        "550 5.1.1 no such user"
        if line.startswith("RCPT")
        else "354 go ahead"
        if line == "DATA"
        else None
    )
    async with MessageClient(settings_on(scripted.port, concurrency=1)) as client:
        results = await client.send_many([mail(1), mail(2)])
    assert [r.status for r in results] == ["failed", "failed"]
    assert scripted.messages == []
    assert scripted.sessions == 2  # the session with DATA open was dropped


@pytest.mark.parametrize("tls", ["starttls", "tls"])
async def test_pipelining_works_over_tls(
    tls: str,
    server_tls: ssl.SSLContext,
    ca_file: Path,
    settings_on: Callable[..., MailerSettings],
    mail: Callable[..., Message],
) -> None:
    """Over STARTTLS and implicit TLS the grouped path delivers every message."""
    async with await start_inbox(
        handler=PipeliningHandler(),
        tls=tls,
        ssl_context=server_tls,  # type: ignore[arg-type]
    ) as inbox:
        settings = settings_on(
            inbox.port, smtp_tls=tls, smtp_ca_file=ca_file, concurrency=2
        )
        async with MessageClient(settings) as client:
            results = await client.send_many(mail(n) for n in range(12))
        assert all(r.is_sent for r in results)
        assert sorted(m.subject for m in inbox.messages) == sorted(
            f"n{n}" for n in range(12)
        )
        assert inbox.sessions_opened == 2
