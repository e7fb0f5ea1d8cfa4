"""Tests a user writes with mailer's pytest plugin: no conftest.py, no patch paths."""

from __future__ import annotations

import pytest
from shop_notify import (
    AUDIT_COPY,
    send_order_updates,
    send_password_reset,
    send_password_reset_sync,
)

from mailer import DeliveryError, RecipientsRefusedError, Reply
from mailer.testing import Addr, AnyOf, Contains, Mail, Not, Regex


@pytest.mark.asyncio
async def test_reset_mail_goes_to_the_user_with_a_blind_audit_copy(
    mail_outbox, mailer_settings
):
    """mail_outbox: the whole message is built; nothing leaves the process."""
    await send_password_reset("Bob@Example.test", "482913", settings=mailer_settings())

    mail = mail_outbox.one(to=Addr("bob@example.test"), subject=Contains("Reset"))
    assert mail.extract(r"reset code is (\d{6})") == "482913"
    assert mail.bcc == (AUDIT_COPY,)
    assert AUDIT_COPY.encode() not in mail.raw  # Bcc stays off the headers
    assert mail.html == "<p>Your reset code is <b>482913</b>.</p>"
    mail_outbox.assert_sent_count(1)


@pytest.mark.asyncio
async def test_reset_mail_with_a_mock(mock_send, mailer_settings):
    """mock_send: assert on the call with partial matchers."""
    result = await send_password_reset(
        "bob@example.test", "111222", settings=mailer_settings()
    )

    assert result.is_sent
    mock_send.assert_awaited_once_with(
        Mail(to="bob@example.test", bcc=[AUDIT_COPY], text=Regex(r"code is \d{6}"))
    )


@pytest.mark.asyncio
async def test_one_refused_order_does_not_stop_the_others(mock_send, mailer_settings):
    """mock_send.side_effect: one customer's mailbox refuses; the rest are sent."""
    refusal = Reply(550, "5.1.1 mailbox unavailable")

    def refuse_zoe(message):
        if message.to[0].addr_spec == "zoe@example.test":
            raise RecipientsRefusedError(
                "refused", refused={"zoe@example.test": refusal}, reply=refusal
            )
        return None  # accepted, as usual

    mock_send.side_effect = refuse_zoe
    results = await send_order_updates(
        [("ann@example.test", "A-1"), ("zoe@example.test", "A-2")],
        settings=mailer_settings(),
    )

    assert [r.status.value for r in results] == ["sent", "failed"]
    assert results[1].reply == refusal


@pytest.mark.asyncio
@pytest.mark.smtp_server(tls="starttls", require_starttls=True, auth={"shop": "s3cret"})
async def test_reset_over_real_smtp_with_starttls_auth_and_a_greylisting_fault(
    smtp_server,
):
    """smtp_server: real SMTP, verified STARTTLS, AUTH, and a fault that fires once."""
    greylisting = smtp_server.faults.reply("MAIL", 451, "4.7.1 Greylisted", times=1)

    result = await send_password_reset(
        "bob@example.test", "654321", settings=smtp_server.settings()
    )

    assert result.is_sent
    assert greylisting.fired == 1
    [mail] = await smtp_server.outbox.wait_for(subject="Reset your password")
    assert mail.session.tls == "starttls"
    assert mail.session.auth_username == "shop"
    assert mail.envelope.rcpt_tos == ("bob@example.test", AUDIT_COPY)
    assert "C: AUTH PLAIN ***" in mail.transcript


@pytest.mark.asyncio
@pytest.mark.smtp_faults(
    plan=lambda faults: faults.reply("RCPT", 550, recipient="zoe@example.test")
)
async def test_order_updates_over_smtp_report_the_refused_mailbox(smtp_server):
    """smtp_faults marker: the refusal is planned before the test runs."""
    results = await send_order_updates(
        [("ann@example.test", "A-1"), ("zoe@example.test", "A-2")],
        settings=smtp_server.settings(),
    )

    assert [r.is_sent for r in results] == [True, False]
    assert results[1].reply.code == 550
    smtp_server.outbox.assert_sent(Mail(to="ann@example.test"), count=1)
    smtp_server.outbox.assert_not_sent(to=AnyOf("zoe@example.test", Not(Contains("@"))))


@pytest.mark.asyncio
async def test_a_fallback_server_takes_over(smtp_server_factory, smtp_tls):
    """smtp_server_factory: two servers; the primary refuses every connection."""
    primary = await smtp_server_factory(tls="tls", auth={"shop": "pw"})
    primary.faults.greeting(554, "5.3.2 Not accepting mail")
    fallback = await smtp_server_factory(tls="tls", auth={"shop": "pw"})

    with pytest.raises(DeliveryError, match="554"):
        await send_password_reset("bob@example.test", "1", settings=primary.settings())
    await send_password_reset("bob@example.test", "2", settings=fallback.settings())

    assert fallback.settings().smtp_ca_file == smtp_tls.ca_path
    primary.outbox.assert_nothing_sent()
    fallback.outbox.one(Mail(tls="tls", text=Contains("code is 2")))


@pytest.mark.smtp_server(tls="starttls")
def test_the_sync_entry_point_against_the_threaded_server(smtp_server_threaded):
    """smtp_server_threaded: for code that runs its own event loop."""
    send_password_reset_sync(
        "bob@example.test", "777", settings=smtp_server_threaded.settings()
    )

    [mail] = smtp_server_threaded.outbox.wait_for_blocking(to="bob@example.test")
    assert "777" in mail.text
