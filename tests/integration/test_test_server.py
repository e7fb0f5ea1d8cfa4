"""SMTPTestServer: options, TLS and AUTH facts, transcripts, settings, life cycle."""

from __future__ import annotations

import asyncio
from typing import Any

import aiosmtplib
import pytest

from mailer import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    Message,
    MessageClient,
    UnsupportedError,
)
from mailer.testing import SMTPTestServer, TLSBundle

PASSWORD = "pa55-w0rd-for-tests"


def message(**fields: Any) -> Message:
    values: dict[str, Any] = {"to": "bob@example.test", "subject": "Hi", "body": "b"}
    values.update(fields)
    return Message(**values)


async def test_a_plain_server_records_envelope_session_and_transcript() -> None:
    """Plain SMTP: the SentMail has the envelope, Bcc, session facts and the dialogue."""
    async with SMTPTestServer() as server:
        async with MessageClient(server.settings()) as client:
            result = await client.send(
                message(cc="carol@example.test", bcc="Audit@Example.test")
            )
        mail = server.outbox.one()
    assert result.is_sent
    assert mail.envelope.mail_from == "sender@example.test"
    # The domain's case is folded; the local part's is the sender's to keep.
    assert mail.bcc == ("Audit@example.test",)
    assert mail.session is not None
    assert (mail.session.number, mail.session.tls, mail.session.tls_version) == (
        1,
        "none",
        None,
    )
    assert mail.session.auth_username is None
    assert mail.session.helo
    assert mail.session.peer[0] == "127.0.0.1"
    assert mail.transcript[0].startswith("S: 220 ")
    assert "C: MAIL FROM:<sender@example.test> SIZE=" in "\n".join(mail.transcript)
    assert "C: RCPT TO:<Audit@example.test>" in mail.transcript
    assert mail.transcript[-1] == "S: 250 2.0.0 Ok: queued as 1"


async def test_starttls_required_with_auth_records_tls_and_user() -> None:
    """STARTTLS + required TLS + AUTH: verified TLS, the user on record, no password in the transcript."""
    async with SMTPTestServer(
        tls="starttls", require_starttls=True, auth={"svc": PASSWORD}
    ) as server:
        async with MessageClient(server.settings()) as client:
            await client.send(message())
        mail = server.outbox.one()
    assert mail.session is not None
    assert mail.session.tls == "starttls"
    assert mail.session.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert mail.session.auth_username == "svc"
    assert "C: STARTTLS" in mail.transcript
    assert "C: AUTH PLAIN ***" in mail.transcript
    assert not any(PASSWORD in line for line in mail.transcript)


async def test_implicit_tls_with_auth() -> None:
    """Implicit TLS: AUTH is offered (aiosmtpd is told the socket is TLS) and works."""
    async with SMTPTestServer(tls="tls", auth={"svc": PASSWORD}) as server:
        async with MessageClient(server.settings()) as client:
            await client.send(message())
        mail = server.outbox.one()
    assert mail.session is not None
    assert (mail.session.tls, mail.session.auth_username) == ("tls", "svc")
    assert "C: STARTTLS" not in mail.transcript


async def test_required_starttls_refuses_mail_in_clear() -> None:
    """require_starttls: MAIL before STARTTLS gets 530."""
    async with SMTPTestServer(tls="starttls", require_starttls=True) as server:
        smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False)
        await smtp.connect()
        try:
            await smtp.ehlo()
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await smtp.mail("a@example.test")
        finally:
            smtp.close()
    assert caught.value.code == 530


async def test_a_wrong_password_is_refused() -> None:
    """auth={user: pw}: other credentials give AuthenticationError (535)."""
    async with (
        SMTPTestServer(tls="starttls", auth={"svc": PASSWORD}) as server,
        MessageClient(server.settings(smtp_password="nope")) as client,
    ):
        with pytest.raises(AuthenticationError) as caught:
            await client.send(message())
    assert caught.value.reply is not None
    assert caught.value.reply.code == 535
    server.outbox.assert_nothing_sent()


async def test_smtputf8_on_and_off() -> None:
    """A non-ASCII mailbox is sent with SMTPUTF8 when offered, refused when not."""
    async with SMTPTestServer() as server:
        async with MessageClient(server.settings()) as client:
            await client.send(message(to="josé@example.test"))
        mail = server.outbox.one()
    assert "SMTPUTF8" in mail.mail_options
    assert mail.envelope.rcpt_tos == ("josé@example.test",)
    async with (
        SMTPTestServer(smtputf8=False) as server,
        MessageClient(server.settings()) as client,
    ):
        with pytest.raises(UnsupportedError):
            await client.send(message(to="josé@example.test"))


async def test_a_size_limit_is_advertised_and_enforced() -> None:
    """size_limit=2000: a small message goes, a big one is refused with 552."""
    async with SMTPTestServer(size_limit=2000) as server:
        async with MessageClient(server.settings()) as client:
            await client.send(message(subject="small"))
            # mailer checks the advertised SIZE itself, before MAIL FROM.
            with pytest.raises(UnsupportedError, match="at most 2,000 bytes"):
                await client.send(message(subject="big", body="x" * 5000))
        # A client that does not check first is refused by the server (SIZE=).
        async with aiosmtplib.SMTP(hostname=server.host, port=server.port) as smtp:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await smtp.sendmail(
                    "a@example.test",
                    ["bob@example.test"],
                    b"Subject: big\r\n\r\n" + b"x" * 5000,
                )
        transcript = "\n".join(server.transcripts[0])
    assert "S: 250-SIZE 2000" in transcript
    assert caught.value.code == 552
    assert [m.subject for m in server.outbox] == ["small"]


async def test_no_size_limit_means_no_size_extension() -> None:
    """size_limit=None: SIZE is not advertised and a large message is accepted."""
    async with SMTPTestServer(size_limit=None) as server:
        async with MessageClient(server.settings()) as client:
            await client.send(message(body="x" * 100_000))
        mail = server.outbox.one()
    assert not any(line.startswith("S: 250-SIZE") for line in mail.transcript)


async def test_settings_ignore_the_developers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """server.settings() takes nothing from MAILER_* variables, even unknown ones."""
    monkeypatch.setenv("MAILER_SMTP_USERNAME", "leaked-user")
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", "leaked-password")
    monkeypatch.setenv("MAILER_CONCURRENCY", "77")
    monkeypatch.setenv("MAILER_NOT_A_SETTING", "x")
    async with SMTPTestServer() as server:
        settings = server.settings()
        overridden = server.settings(concurrency=2, from_="shop@example.test")
        async with MessageClient(settings) as client:
            await client.send(message())
    assert settings.smtp_username is None
    assert settings.concurrency == 5
    assert (settings.smtp_host, settings.port) == (server.host, server.port)
    assert settings.tls_mode == "none"
    assert settings.timeout == 10
    assert (overridden.concurrency, overridden.from_) == (2, "shop@example.test")


async def test_settings_reject_an_unknown_override() -> None:
    """A typo in settings() is a one-line ConfigError with a suggestion."""
    async with SMTPTestServer() as server:
        with pytest.raises(
            ConfigError, match=r"^smtp_hots: unknown setting \(did you mean"
        ):
            server.settings(smtp_hots="x")
        with pytest.raises(ConfigError, match="^MAILER_CONCURRENCY: "):
            server.settings(concurrency=0)


async def test_settings_carry_tls_trust_and_credentials() -> None:
    """With TLS and AUTH, settings() has the mode, the CA file and the first user."""
    async with SMTPTestServer(tls="starttls", auth={"svc": PASSWORD}) as server:
        settings = server.settings()
        bundle = server.tls_bundle
        assert bundle is not None
        assert settings.smtp_ca_file == bundle.ca_path
        assert bundle.ca_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert settings.tls_mode == "starttls"
    assert settings.smtp_username == "svc"
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == PASSWORD
    assert not bundle.ca_path.exists()  # the server's own CA is removed on stop


async def test_servers_can_share_one_tls_bundle(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A TLSBundle given to two servers: both use it, and a raw client trusts it."""
    bundle = TLSBundle.create(tmp_path)
    async with (
        SMTPTestServer(tls="tls", tls_bundle=bundle) as first,
        SMTPTestServer(tls="starttls", tls_bundle=bundle) as second,
    ):
        assert first.settings().smtp_ca_file == second.settings().smtp_ca_file
        smtp = aiosmtplib.SMTP(
            hostname="localhost",
            port=first.port,
            use_tls=True,
            tls_context=bundle.client_context,
        )
        await smtp.connect()
        await smtp.quit()
    assert bundle.ca_path.exists()  # a bundle given to a server is not removed


async def test_a_reused_connection_shows_as_one_session() -> None:
    """Five messages through one pooled connection all carry session number 1."""
    async with (
        SMTPTestServer() as server,
        MessageClient(server.settings(concurrency=1)) as client,
    ):
        await client.send_many([message(subject=f"n{n}") for n in range(5)])
    assert {m.session.number for m in server.outbox if m.session} == {1}
    assert server.sessions_opened == 1


async def test_wait_for_returns_mail_that_arrives_later() -> None:
    """outbox.wait_for waits for mail sent by a task that is still running."""
    async with SMTPTestServer() as server:

        async def send_late() -> None:
            await asyncio.sleep(0.05)
            async with MessageClient(server.settings()) as client:
                await client.send(message(subject="late"))

        task = asyncio.create_task(send_late())
        [mail] = await server.outbox.wait_for(subject="late", timeout=5)
        await task
    assert mail.subject == "late"


async def test_life_cycle_start_stop_and_errors() -> None:
    """port needs a started server; start twice fails; stop is idempotent; then refused."""
    server = SMTPTestServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port
    await server.start()
    port = server.port
    with pytest.raises(RuntimeError, match="already running"):
        await server.start()
    assert repr(server) == f"<SMTPTestServer 127.0.0.1:{port} tls=None auth=False>"
    await server.stop()
    await server.stop()
    assert not server.is_running
    assert server.port == port  # still known: settings() can aim at the dead server
    assert repr(server) == "<SMTPTestServer (not running) tls=None auth=False>"
    async with MessageClient(server.settings()) as client:
        with pytest.raises(ConnectError, match=f"cannot reach 127.0.0.1:{port}"):
            await client.send(message())


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"auth": {"u": "p"}}, "auth: needs tls='starttls' or tls='tls'"),
        ({"tls": "starttls", "auth": {}}, "auth: give at least one"),
        ({"require_starttls": True}, "require_starttls: needs tls='starttls'"),
        ({"tls": "ssl"}, "tls: use None, 'starttls' or 'tls'"),
        ({"size_limit": 0}, "size_limit: must be 1 or more"),
        ({"host": "0.0.0.0"}, "host: only loopback addresses"),  # noqa: S104 - refused
        ({"host": "192.0.2.1"}, "host: only loopback addresses"),
    ],
)
def test_impossible_options_are_refused(options: dict[str, Any], error: str) -> None:
    """Options that cannot work, or a non-loopback host, raise ValueError at once."""
    with pytest.raises(ValueError, match=error):
        SMTPTestServer(**options)
