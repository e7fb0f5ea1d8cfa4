"""The plugin's server fixtures: smtp_server (+ markers), the factory, smtp_tls, threaded."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib
import pytest

from mailer import ConnectError, Message, MessageClient, SenderRefusedError
from mailer.testing import (
    Mail,
    SMTPTestServer,
    ThreadedSMTPTestServer,
    TLSBundle,
)
from mailer.testing.server.faults import FaultPlan

ServerFactory = Callable[..., Awaitable[SMTPTestServer]]


def message(subject: str = "Hi") -> Message:
    return Message(to="bob@example.test", subject=subject, body="b")


async def test_smtp_server_is_plain_smtp_on_loopback(
    smtp_server: SMTPTestServer,
) -> None:
    """With no marker: plain SMTP on 127.0.0.1, a real port, an empty outbox."""
    assert smtp_server.host == "127.0.0.1"
    assert smtp_server.port > 0
    assert smtp_server.tls is None
    smtp_server.outbox.assert_nothing_sent()
    async with MessageClient(smtp_server.settings()) as client:
        await client.send(message())
    smtp_server.outbox.assert_sent(Mail(subject="Hi", tls="none"), count=1)


@pytest.mark.smtp_server(tls="starttls", require_starttls=True, auth={"svc": "pw"})
async def test_the_marker_sets_starttls_and_auth(
    smtp_server: SMTPTestServer, smtp_tls: TLSBundle
) -> None:
    """@pytest.mark.smtp_server(...): STARTTLS, AUTH, and the session's test CA."""
    assert smtp_server.tls_bundle is smtp_tls
    async with MessageClient(smtp_server.settings()) as client:
        await client.send(message())
    smtp_server.outbox.one(Mail(tls="starttls", auth_username="svc"))


def refuse_mail_once(faults: FaultPlan) -> None:
    # Permanent, so that no retry policy can hide the refusal.
    faults.reply("MAIL", 550, "5.7.1 Sender blocked", times=1)


@pytest.mark.smtp_faults(plan=refuse_mail_once)
async def test_the_faults_marker_plans_faults_before_the_test(
    smtp_server: SMTPTestServer,
) -> None:
    """@pytest.mark.smtp_faults(plan=...): the fault is armed before the test body runs."""
    [rule] = smtp_server.faults.rules
    async with MessageClient(smtp_server.settings()) as client:
        with pytest.raises(SenderRefusedError):
            await client.send(message("first"))
        await client.send(message("second"))
    assert rule.fired == 1
    smtp_server.outbox.one(subject="second")


async def test_the_factory_starts_several_servers(
    smtp_server_factory: ServerFactory, smtp_tls: TLSBundle
) -> None:
    """smtp_server_factory(**options): a refusing primary and a TLS fallback."""
    primary = await smtp_server_factory()
    primary.faults.greeting(421, "4.3.2 Maintenance")
    fallback = await smtp_server_factory(tls="tls", auth={"svc": "pw"})
    assert fallback.tls_bundle is smtp_tls
    assert primary.port != fallback.port
    sent_to = []
    for server in (primary, fallback):
        try:
            async with MessageClient(server.settings()) as client:
                await client.send(message())
        except ConnectError:
            continue
        sent_to.append(server)
        break
    assert sent_to == [fallback]
    fallback.outbox.one(Mail(tls="tls"))


async def test_factory_servers_are_stopped_after_the_test(
    smtp_server_factory: ServerFactory,
) -> None:
    """Each server the factory started is running during the test."""
    servers = [await smtp_server_factory() for _ in range(3)]
    assert all(server.is_running for server in servers)
    assert len({server.port for server in servers}) == 3


@pytest.mark.smtp_server(tls="tls")
async def test_smtp_tls_gives_a_client_context_that_verifies(
    smtp_server: SMTPTestServer, smtp_tls: TLSBundle
) -> None:
    """smtp_tls.client_context trusts the server's certificate, verification on."""
    assert smtp_tls.client_context.verify_mode is ssl.CERT_REQUIRED
    assert smtp_tls.client_context.check_hostname is True
    smtp = aiosmtplib.SMTP(
        hostname="localhost",
        port=smtp_server.port,
        use_tls=True,
        tls_context=smtp_tls.client_context,
    )
    await smtp.connect()
    await smtp.quit()
    untrusting = ssl.create_default_context()
    smtp = aiosmtplib.SMTP(
        hostname="localhost",
        port=smtp_server.port,
        use_tls=True,
        tls_context=untrusting,
    )
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await smtp.connect()


@pytest.mark.smtp_server(tls="starttls", auth={"svc": "pw"})
@pytest.mark.smtp_faults(
    plan=lambda faults: faults.reply("RCPT", 550, recipient="x@example.test")
)
def test_the_threaded_server_serves_code_with_its_own_event_loop(
    smtp_server_threaded: ThreadedSMTPTestServer,
) -> None:
    """A synchronous test: the code under test runs asyncio.run() itself."""

    def send_report_sync(settings: Any) -> Any:  # what a sync app would do
        async def send() -> Any:
            async with MessageClient(settings) as client:
                return await client.send(
                    Message(
                        to=["x@example.test", "y@example.test"],
                        subject="Report",
                        body="b",
                    )
                )

        return asyncio.run(send())

    result = send_report_sync(smtp_server_threaded.settings())
    assert result.refused["x@example.test"].code == 550
    [mail] = smtp_server_threaded.outbox.wait_for_blocking(subject="Report", timeout=5)
    assert mail.envelope.rcpt_tos == ("y@example.test",)
    assert mail.session is not None
    assert (mail.session.tls, mail.session.auth_username) == ("starttls", "svc")


def test_the_threaded_server_stops_cleanly_and_only_once() -> None:
    """start/stop by hand: stop twice is fine; start twice is refused."""
    server = ThreadedSMTPTestServer()
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        assert repr(server).startswith("<ThreadedSMTPTestServer 127.0.0.1:")
    finally:
        server.stop()
    server.stop()
    assert not server.server.is_running
