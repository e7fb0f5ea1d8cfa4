"""The real client against a real aiosmtpd server: envelope, MIME, TLS, AUTH, refusals."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as ServerEnvelope

from mailer import (
    AuthenticationError,
    ConnectError,
    DeliveryTimeoutError,
    Message,
    MessageClient,
    RecipientFile,
    TLSError,
    send_messages,
)
from mailer.inbox import Inbox, InboxHandler, start_inbox
from mailer.settings import MailerSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORD = "correct horse battery staple"


async def test_a_templated_batch_arrives_rendered(
    inbox: Inbox, settings_for: Callable[..., MailerSettings]
) -> None:
    """send_messages over SMTP: every example row arrives, rendered, with its envelope."""
    report = await send_messages(
        "welcome",
        RecipientFile(EXAMPLES / "recipients.csv"),
        settings=settings_for(inbox),
    )
    assert (report.sent, report.failed) == (4, 0)
    by_rcpt = {mail.envelope.rcpt_tos: mail for mail in inbox.messages}
    assert set(by_rcpt) == {
        ("ann@example.test",),
        ("bob@example.test",),
        ("li.lei@example.test",),
        ("zoe@example.test",),
    }
    li = by_rcpt[("li.lei@example.test",)]
    assert li.envelope.mail_from == "shop@example.test"
    assert li.subject == "Welcome to Example Shop, Client 062 李雷!"
    assert li.message["To"].addresses[0].display_name == "Client 062 李雷"
    assert li.message["From"] == "Example Shop <shop@example.test>"
    assert li.text is not None
    assert "Your customer number is C-062." in li.text
    assert li.html is not None
    assert "<b>C-062</b>" in li.html
    bob = by_rcpt[("bob@example.test",)]
    assert bob.html is not None
    assert "Hello Bob &lt;Builder&gt; &amp; Co," in bob.html
    assert bob.text is not None
    assert "Hello Bob <Builder> & Co," in bob.text
    for result in report.results:
        assert result.reply is not None
        assert result.reply.code == 250
        assert result.message_id is not None
    ids = {mail.message["Message-ID"] for mail in inbox.messages}
    assert ids == {result.message_id for result in report.results}


async def test_bcc_is_on_the_envelope_only(
    inbox: Inbox, settings_for: Callable[..., MailerSettings]
) -> None:
    """The server gets RCPT TO for Bcc, and no Bcc header in the message."""
    message = Message(
        to="Ann <ann@example.test>",
        cc="carol@example.test",
        bcc=["audit@example.test", "Zoë <zoe@example.test>"],
        subject="Quarterly figures",
        body="See attached.",
    )
    async with MessageClient(settings_for(inbox)) as client:
        result = await client.send(message)
    [mail] = inbox.messages
    assert mail.envelope.rcpt_tos == (
        "ann@example.test",
        "carol@example.test",
        "audit@example.test",
        "zoe@example.test",
    )
    assert result.accepted == mail.envelope.rcpt_tos
    assert "Bcc" not in mail.message
    assert b"audit@" not in mail.raw
    assert mail.bcc == ("audit@example.test", "zoe@example.test")
    assert mail.cc == ("carol@example.test",)


async def test_long_lines_and_dot_lines_arrive_whole(
    inbox: Inbox, settings_for: Callable[..., MailerSettings]
) -> None:
    """A body with a 3,000-char line and lone dots arrives exactly, as one message."""
    body = "first\n.\n..\n" + "z" * 3000 + "\r\n.\r\nlast line"
    async with MessageClient(settings_for(inbox)) as client:
        await client.send(
            Message(
                to="a@example.test", subject="dots", body=body, html="<p>.</p>\n.\n"
            )
        )
    [mail] = inbox.messages
    assert mail.text == body.replace("\r\n", "\n")
    assert mail.html == "<p>.</p>\n.\n"
    assert max(len(line) for line in mail.raw.split(b"\r\n")) <= 998


class RefuseNobody(InboxHandler):
    """Refuses one recipient with 550, accepts the others."""

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: ServerEnvelope,
        address: str,
        options: list[str],
    ) -> str:
        if address == "nobody@example.test":
            return "550 5.1.1 <nobody@example.test>: Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


async def test_one_refused_recipient_does_not_stop_the_others(
    settings_for: Callable[..., MailerSettings],
) -> None:
    """550 for one RCPT: the message goes to the rest and the refusal is reported."""
    async with await start_inbox(handler=RefuseNobody()) as server:
        async with MessageClient(settings_for(server)) as client:
            result = await client.send(
                Message(
                    to=["ann@example.test", "nobody@example.test", "bob@example.test"],
                    subject="s",
                    body="b",
                )
            )
        [mail] = server.messages
    assert result.is_sent
    assert result.accepted == ("ann@example.test", "bob@example.test")
    assert result.refused["nobody@example.test"].code == 550
    assert result.refused["nobody@example.test"].enhanced_status == "5.1.1"
    assert mail.envelope.rcpt_tos == ("ann@example.test", "bob@example.test")


async def test_all_recipients_refused_fails_that_message_only(
    settings_for: Callable[..., MailerSettings],
) -> None:
    """In a batch, a message whose only recipient is refused fails; the others go."""
    async with await start_inbox(handler=RefuseNobody()) as server:
        async with MessageClient(settings_for(server)) as client:
            results = await client.send_many(
                [
                    Message(to=to, subject="s", body="b")
                    for to in [
                        "ann@example.test",
                        "nobody@example.test",
                        "bob@example.test",
                    ]
                ]
            )
        assert len(server.messages) == 2
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert results[1].reply is not None
    assert results[1].reply.code == 550
    assert results[1].transient is False


async def test_starttls_with_a_verified_certificate(
    server_tls: ssl.SSLContext,
    ca_file: Path,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """STARTTLS against a certificate from the test CA, verification on."""
    async with await start_inbox(
        tls="starttls", ssl_context=server_tls, require_starttls=True
    ) as server:
        async with MessageClient(
            settings_for(server, smtp_tls="starttls", smtp_ca_file=ca_file)
        ) as client:
            result = await client.send(
                Message(to="a@example.test", subject="over TLS", body="b")
            )
        assert [m.subject for m in server.messages] == ["over TLS"]
    assert result.is_sent


async def test_implicit_tls_with_a_verified_certificate(
    server_tls: ssl.SSLContext,
    ca_file: Path,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """Implicit TLS (as on port 465) with the test CA."""
    async with await start_inbox(tls="tls", ssl_context=server_tls) as server:
        async with MessageClient(
            settings_for(server, smtp_tls="tls", smtp_ca_file=ca_file)
        ) as client:
            await client.send(
                Message(to="a@example.test", subject="implicit", body="b")
            )
        assert [m.subject for m in server.messages] == ["implicit"]


async def test_an_untrusted_certificate_is_refused(
    server_tls: ssl.SSLContext, settings_for: Callable[..., MailerSettings]
) -> None:
    """Without the CA, the certificate is not trusted: TLSError, nothing sent."""
    async with await start_inbox(tls="starttls", ssl_context=server_tls) as server:
        async with MessageClient(settings_for(server, smtp_tls="starttls")) as client:
            with pytest.raises(TLSError, match="certificate not trusted") as caught:
                await client.send(Message(to="a@example.test", subject="s", body="b"))
        assert server.messages == []
    assert "self-signed" in str(caught.value) or "unable to get local issuer" in str(
        caught.value
    )


async def test_required_starttls_that_the_server_does_not_offer_fails_closed(
    inbox: Inbox, settings_for: Callable[..., MailerSettings]
) -> None:
    """MAILER_SMTP_TLS=starttls never falls back to plain text."""
    async with MessageClient(settings_for(inbox, smtp_tls="starttls")) as client:
        with pytest.raises(TLSError, match="does not offer STARTTLS"):
            await client.send(Message(to="a@example.test", subject="s", body="b"))
    assert inbox.messages == []


async def test_auth_with_the_right_password(
    server_tls: ssl.SSLContext,
    ca_file: Path,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """AUTH over STARTTLS with the right credentials delivers."""
    async with await start_inbox(
        tls="starttls", ssl_context=server_tls, auth={"mailer": PASSWORD}
    ) as server:
        settings = settings_for(
            server,
            smtp_tls="starttls",
            smtp_ca_file=ca_file,
            smtp_username="mailer",
            smtp_password=PASSWORD,
        )
        async with MessageClient(settings) as client:
            await client.send(
                Message(to="a@example.test", subject="authenticated", body="b")
            )
        assert [m.subject for m in server.messages] == ["authenticated"]


async def test_auth_with_a_wrong_password_is_a_clear_error(
    server_tls: ssl.SSLContext,
    ca_file: Path,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """535 from the server becomes AuthenticationError; the password is not in it."""
    async with await start_inbox(
        tls="starttls", ssl_context=server_tls, auth={"mailer": PASSWORD}
    ) as server:
        settings = settings_for(
            server,
            smtp_tls="starttls",
            smtp_ca_file=ca_file,
            smtp_username="mailer",
            smtp_password="wrong-password",
        )
        async with MessageClient(settings) as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.send(Message(to="a@example.test", subject="s", body="b"))
        assert server.messages == []
    assert (
        str(caught.value)
        == f"{server.address} refused the login: 535 5.7.8 Authentication credentials invalid"
    )
    assert caught.value.reply is not None
    assert caught.value.reply.code == 535
    assert "wrong-password" not in repr(caught.value.__cause__)


async def test_a_server_requiring_auth_refuses_anonymous_mail(
    server_tls: ssl.SSLContext,
    ca_file: Path,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """Without credentials, a server that needs AUTH refuses the sender (530)."""
    async with (
        await start_inbox(
            tls="starttls", ssl_context=server_tls, auth={"mailer": PASSWORD}
        ) as server,
        MessageClient(
            settings_for(server, smtp_tls="starttls", smtp_ca_file=ca_file)
        ) as client,
    ):
        results = await client.send_many(
            [Message(to="a@example.test", subject="s", body="b")]
        )
    assert results[0].reply is not None
    assert results[0].reply.code == 530


async def test_connections_are_reused_and_bounded(
    inbox: Inbox, settings_for: Callable[..., MailerSettings]
) -> None:
    """30 messages with concurrency 3 use at most 3 SMTP sessions."""
    async with MessageClient(settings_for(inbox, concurrency=3)) as client:
        results = await client.send_many(
            Message(to=f"u{n}@example.test", subject=f"n{n}", body="b")
            for n in range(30)
        )
    assert all(r.is_sent for r in results)
    assert len(inbox.messages) == 30
    assert 1 <= inbox.sessions_opened <= 3


async def test_a_connection_the_server_dropped_while_idle_is_replaced(
    inbox: Inbox, settings_for: Callable[..., MailerSettings]
) -> None:
    """After the server closes an idle pooled connection, the next send reconnects."""
    async with MessageClient(settings_for(inbox, concurrency=1)) as client:
        await client.send(Message(to="a@example.test", subject="first", body="b"))
        for protocol in list(inbox._connections):
            assert protocol.transport is not None
            protocol.transport.close()
        await asyncio.sleep(0.05)
        result = await client.send(
            Message(to="a@example.test", subject="second", body="b")
        )
    assert result.is_sent
    assert [m.subject for m in inbox.messages] == ["first", "second"]
    assert inbox.sessions_opened == 2


async def test_nothing_listening_is_a_transient_connect_error(
    settings_for: Callable[..., MailerSettings],
) -> None:
    """A closed port gives ConnectError, marked transient."""
    server = await start_inbox()
    await server.aclose()
    async with MessageClient(settings_for(server)) as client:
        with pytest.raises(
            ConnectError, match=f"cannot reach {server.address}"
        ) as caught:
            await client.send(Message(to="a@example.test", subject="s", body="b"))
    assert caught.value.transient is True


async def test_a_server_that_never_greets_times_out(
    settings_for: Callable[..., MailerSettings],
) -> None:
    """A server that accepts and says nothing costs the timeout, not forever."""
    writers: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(
        lambda r, w: writers.append(w), host="127.0.0.1", port=0
    )
    port = silent.sockets[0].getsockname()[1]
    try:
        settings = MailerSettings(
            _env_file=None,
            smtp_host="127.0.0.1",
            smtp_port=port,
            from_="a@example.test",
            greeting_timeout=0.5,
            max_attempts=1,
        )
        started = time.monotonic()
        async with MessageClient(settings) as client:
            with pytest.raises(DeliveryTimeoutError):
                await client.send(Message(to="a@example.test", subject="s", body="b"))
        elapsed = time.monotonic() - started
    finally:
        for writer in writers:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert 0.4 < elapsed < 2.0
