"""The real client against a real aiosmtpd server: envelope, MIME, TLS, AUTH, refusals.

The servers come from mailer's own pytest plugin (smtp_server and its markers),
so these tests are also its first users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

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
from mailer.config.settings import MailerSettings
from mailer.testing import Mail, SMTPTestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORD = "correct horse battery staple"
REJECT_NOBODY = "5.1.1 <nobody@example.test>: Recipient address rejected"


async def test_a_templated_batch_arrives_rendered(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """send_messages over SMTP: every example row arrives, rendered, with its envelope."""
    report = await send_messages(
        "welcome",
        RecipientFile(EXAMPLES / "recipients.csv"),
        settings=settings_for(smtp_server),
    )
    assert (report.sent, report.failed) == (4, 0)
    by_rcpt = {mail.envelope.rcpt_tos: mail for mail in smtp_server.outbox}
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
    ids = {mail.message["Message-ID"] for mail in smtp_server.outbox}
    assert ids == {result.message_id for result in report.results}


async def test_bcc_is_on_the_envelope_only(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """The server gets RCPT TO for Bcc, and no Bcc header in the message."""
    message = Message(
        to="Ann <ann@example.test>",
        cc="carol@example.test",
        bcc=["audit@example.test", "Zoë <zoe@example.test>"],
        subject="Quarterly figures",
        body="See attached.",
    )
    async with MessageClient(settings_for(smtp_server)) as client:
        result = await client.send(message)
    mail = smtp_server.outbox.one()
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
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """A body with a 3,000-char line and lone dots arrives exactly, as one message."""
    body = "first\n.\n..\n" + "z" * 3000 + "\r\n.\r\nlast line"
    async with MessageClient(settings_for(smtp_server)) as client:
        await client.send(
            Message(
                to="a@example.test", subject="dots", body=body, html="<p>.</p>\n.\n"
            )
        )
    mail = smtp_server.outbox.one()
    assert mail.text == body.replace("\r\n", "\n")
    assert mail.html == "<p>.</p>\n.\n"
    assert max(len(line) for line in mail.raw.split(b"\r\n")) <= 998


async def test_one_refused_recipient_does_not_stop_the_others(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """550 for one RCPT: the message goes to the rest and the refusal is reported."""
    smtp_server.faults.reply(
        "RCPT", 550, REJECT_NOBODY, recipient="nobody@example.test"
    )
    async with MessageClient(settings_for(smtp_server)) as client:
        result = await client.send(
            Message(
                to=["ann@example.test", "nobody@example.test", "bob@example.test"],
                subject="s",
                body="b",
            )
        )
    mail = smtp_server.outbox.one()
    assert result.is_sent
    assert result.accepted == ("ann@example.test", "bob@example.test")
    assert result.refused["nobody@example.test"].code == 550
    assert result.refused["nobody@example.test"].enhanced_status == "5.1.1"
    assert mail.envelope.rcpt_tos == ("ann@example.test", "bob@example.test")


async def test_all_recipients_refused_fails_that_message_only(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """In a batch, a message whose only recipient is refused fails; the others go."""
    smtp_server.faults.reply(
        "RCPT", 550, REJECT_NOBODY, recipient="nobody@example.test"
    )
    async with MessageClient(settings_for(smtp_server)) as client:
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
    smtp_server.outbox.assert_sent_count(2)
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert results[1].reply is not None
    assert results[1].reply.code == 550
    assert results[1].transient is False


@pytest.mark.smtp_server(tls="starttls", require_starttls=True)
async def test_starttls_with_a_verified_certificate(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """STARTTLS against a certificate from the test CA, verification on."""
    async with MessageClient(settings_for(smtp_server)) as client:
        result = await client.send(
            Message(to="a@example.test", subject="over TLS", body="b")
        )
    assert result.is_sent
    smtp_server.outbox.one(Mail(subject="over TLS", tls="starttls"))


@pytest.mark.smtp_server(tls="tls")
async def test_implicit_tls_with_a_verified_certificate(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """Implicit TLS (as on port 465) with the test CA."""
    async with MessageClient(settings_for(smtp_server)) as client:
        await client.send(Message(to="a@example.test", subject="implicit", body="b"))
    smtp_server.outbox.one(Mail(subject="implicit", tls="tls"))


@pytest.mark.smtp_server(tls="starttls")
async def test_an_untrusted_certificate_is_refused(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """Without the CA, the certificate is not trusted: TLSError, nothing sent."""
    async with MessageClient(settings_for(smtp_server, smtp_ca_file=None)) as client:
        with pytest.raises(TLSError, match="certificate not trusted") as caught:
            await client.send(Message(to="a@example.test", subject="s", body="b"))
    smtp_server.outbox.assert_nothing_sent()
    assert "self-signed" in str(caught.value) or "unable to get local issuer" in str(
        caught.value
    )


async def test_required_starttls_that_the_server_does_not_offer_fails_closed(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """MAILER_SMTP_TLS=starttls never falls back to plain text."""
    async with MessageClient(settings_for(smtp_server, smtp_tls="starttls")) as client:
        with pytest.raises(TLSError, match="does not offer STARTTLS"):
            await client.send(Message(to="a@example.test", subject="s", body="b"))
    smtp_server.outbox.assert_nothing_sent()


@pytest.mark.smtp_server(tls="starttls", auth={"mailer": PASSWORD})
async def test_auth_with_the_right_password(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """AUTH over STARTTLS with the right credentials delivers."""
    async with MessageClient(settings_for(smtp_server)) as client:
        await client.send(
            Message(to="a@example.test", subject="authenticated", body="b")
        )
    smtp_server.outbox.one(Mail(subject="authenticated", auth_username="mailer"))


@pytest.mark.smtp_server(tls="starttls", auth={"mailer": PASSWORD})
async def test_auth_with_a_wrong_password_is_a_clear_error(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """535 from the server becomes AuthenticationError; the password is not in it."""
    settings = settings_for(smtp_server, smtp_password="wrong-password")
    async with MessageClient(settings) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.send(Message(to="a@example.test", subject="s", body="b"))
    smtp_server.outbox.assert_nothing_sent()
    assert (
        str(caught.value)
        == f"{smtp_server.address} refused the login: 535 5.7.8 Authentication credentials invalid"
    )
    assert caught.value.reply is not None
    assert caught.value.reply.code == 535
    assert "wrong-password" not in repr(caught.value.__cause__)


@pytest.mark.smtp_server(tls="starttls", auth={"mailer": PASSWORD})
async def test_a_server_requiring_auth_refuses_anonymous_mail(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """Without credentials, a server that needs AUTH refuses the sender (530)."""
    anonymous = settings_for(smtp_server, smtp_username=None, smtp_password=None)
    async with MessageClient(anonymous) as client:
        results = await client.send_many(
            [Message(to="a@example.test", subject="s", body="b")]
        )
    assert results[0].reply is not None
    assert results[0].reply.code == 530


async def test_connections_are_reused_and_bounded(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """30 messages with concurrency 3 use at most 3 SMTP sessions."""
    async with MessageClient(settings_for(smtp_server, concurrency=3)) as client:
        results = await client.send_many(
            Message(to=f"u{n}@example.test", subject=f"n{n}", body="b")
            for n in range(30)
        )
    assert all(r.is_sent for r in results)
    smtp_server.outbox.assert_sent_count(30)
    assert 1 <= smtp_server.sessions_opened <= 3


async def test_a_connection_the_server_dropped_while_idle_is_replaced(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """After the server closes an idle pooled connection, the next send reconnects."""
    async with MessageClient(settings_for(smtp_server, concurrency=1)) as client:
        await client.send(Message(to="a@example.test", subject="first", body="b"))
        assert smtp_server.drop_connections() == 1
        await asyncio.sleep(0.05)  # let the client's side see the close
        result = await client.send(
            Message(to="a@example.test", subject="second", body="b")
        )
    assert result.is_sent
    assert [m.subject for m in smtp_server.outbox] == ["first", "second"]
    assert smtp_server.sessions_opened == 2


async def test_nothing_listening_is_a_transient_connect_error(
    smtp_server_factory: Callable[..., Awaitable[SMTPTestServer]],
    settings_for: Callable[..., MailerSettings],
) -> None:
    """A closed port gives ConnectError, marked transient."""
    server = await smtp_server_factory()
    await server.stop()
    async with MessageClient(settings_for(server)) as client:
        with pytest.raises(
            ConnectError, match=f"cannot reach {server.address}"
        ) as caught:
            await client.send(Message(to="a@example.test", subject="s", body="b"))
    assert caught.value.transient is True


async def test_a_server_that_never_greets_times_out(
    smtp_server: SMTPTestServer, settings_for: Callable[..., MailerSettings]
) -> None:
    """A server that accepts and says nothing costs the timeout, not forever."""
    smtp_server.faults.no_greeting()
    started = time.monotonic()
    async with MessageClient(
        settings_for(smtp_server, greeting_timeout=0.5, max_attempts=1)
    ) as client:
        with pytest.raises(DeliveryTimeoutError):
            await client.send(Message(to="a@example.test", subject="s", body="b"))
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.0
