"""What reaches a real server: no smuggled commands, headers or messages; limits hold."""

from __future__ import annotations

import aiosmtplib
import pytest

from mailer import (
    Address,
    Envelope,
    HeaderInjectionError,
    Message,
    MessageClient,
    MessageError,
    UnsupportedError,
)
from mailer.transports import SMTPTransport

pytestmark = pytest.mark.integration

SMUGGLING_BODIES = [
    "before\r\n.\r\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSmuggled\r\n.\r\nafter",
    "before\n.\nMAIL FROM:<evil@example.test>\nRCPT TO:<victim@example.test>\nDATA\nSmuggled\n.\nafter",
    "before\r.\rMAIL FROM:<evil@example.test>\rafter",
    "before\n.\r\nMAIL FROM:<evil@example.test>\r\nafter",
    "before\r\n.\nQUIT\nafter",
    ".\r\n",
    "..\r\n...\r\n. \r\n.",
]


@pytest.mark.parametrize("body", SMUGGLING_BODIES)
async def test_a_body_cannot_end_data_early_or_smuggle_a_second_message(
    watched_server, body: str
) -> None:
    """Dot lines and command text in a body: one MAIL, one DATA, the body arrives whole."""
    async with (
        watched_server() as server,
        MessageClient(server.settings()) as client,
    ):
        await client.send(
            Message(to="ann@example.test", subject="dots", body=body, html=body)
        )
    # Exactly one transaction, then our own QUIT: nothing in the body ran.
    assert server.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    [mail] = list(server.outbox)
    normal = body.replace("\r\n", "\n").replace("\r", "\n")
    assert mail.text == normal
    assert mail.html == normal
    assert mail.envelope.rcpt_tos == ("ann@example.test",)


async def test_cve_2024_6923_a_delivered_message_never_gains_an_injected_header(
    watched_server,
) -> None:
    """Encoded-word and header-looking text: refused when it decodes to a newline, literal otherwise."""
    hidden = [
        "=?utf-8?q?a=0AX-Injected:_yes?=",
        "=?utf-8?b?YQpYLUluamVjdGVkOiB5ZXM=?=",
        "=?utf-8?q?a=0D=0AX-Injected:_yes?=",
        "ok =?iso-8859-1?q?a=0AX-Injected:_yes?= ok",
    ]
    for value in hidden:
        with pytest.raises(HeaderInjectionError):
            Message(to="a@example.test", subject=value, body="b")
        with pytest.raises(HeaderInjectionError):
            Message(
                to="a@example.test", subject="s", body="b", headers={"X-Tag": value}
            )
        with pytest.raises(HeaderInjectionError):
            Message(to=f"{value} <a@example.test>", subject="s", body="b")
    harmless = [
        "=?utf-8?q?a_X-Injected:_yes?=",
        "a X-Injected: yes",
        "=?utf-8?q?X-Injected:?= yes",
        "=?bogus?q?a=0AX-Injected:_yes?=",
    ]
    async with (
        watched_server() as server,
        MessageClient(server.settings()) as client,
    ):
        for value in harmless:
            await client.send(
                Message(
                    to=Address.create("a@example.test", value, field="to"),
                    subject=value,
                    body="Body\r\nX-Injected: yes\r\n\r\nmore",
                    headers={"X-Tag": value},
                )
            )
    assert len(list(server.outbox)) == len(harmless)
    for mail, value in zip(list(server.outbox), harmless, strict=True):
        assert "X-Injected" not in mail.message
        assert mail.subject == value
        assert mail.message["X-Tag"] == value
        assert mail.message["To"].addresses[0].display_name == value
        assert mail.text == "Body\nX-Injected: yes\n\nmore"


async def test_a_non_ascii_local_part_needs_smtputf8(watched_server) -> None:
    """Without SMTPUTF8 the message fails before MAIL; with it, the address goes as UTF-8."""
    message = Message(to="jürgen@example.test", subject="s", body="b")
    async with (
        watched_server(smtputf8=False) as server,
        MessageClient(server.settings()) as client,
    ):
        with pytest.raises(UnsupportedError, match="SMTPUTF8") as caught:
            await client.send(message)
    assert "\n" not in str(caught.value)
    assert server.commands == ["EHLO", "QUIT"]  # refused before MAIL
    async with (
        watched_server(smtputf8=True) as server,
        MessageClient(server.settings()) as client,
    ):
        await client.send(message)
    [mail] = list(server.outbox)
    assert mail.envelope.rcpt_tos == ("jürgen@example.test",)
    assert "SMTPUTF8" in server.outbox[0].mail_options


async def test_an_international_domain_goes_out_as_idna(watched_server) -> None:
    """user@bücher.example: RCPT TO and the To header use the A-label; no SMTPUTF8 needed."""
    async with (
        watched_server(smtputf8=False) as server,
        MessageClient(server.settings()) as client,
    ):
        await client.send(Message(to="Ann <ann@bücher.example>", subject="s", body="b"))
    [mail] = list(server.outbox)
    assert mail.envelope.rcpt_tos == ("ann@xn--bcher-kva.example",)
    assert b"<ann@xn--bcher-kva.example>" in mail.raw
    assert "SMTPUTF8" not in server.outbox[0].mail_options


async def test_a_message_over_the_servers_size_fails_before_mail(
    watched_server,
) -> None:
    """SIZE 4000 advertised: a 6 kB message fails before MAIL; a small one declares SIZE=."""
    async with (
        watched_server(size_limit=4000) as server,
        MessageClient(server.settings()) as client,
    ):
        with pytest.raises(UnsupportedError, match="at most 4,000 bytes") as caught:
            await client.send(
                Message(to="a@example.test", subject="s", body="x" * 6000)
            )
        await client.send(Message(to="a@example.test", subject="s", body="small"))
    assert "nothing was sent" in str(caught.value)
    assert server.commands.count("MAIL") == 1
    [mail] = list(server.outbox)
    assert mail.text == "small"
    assert f"SIZE={len(mail.raw)}" in server.outbox[0].mail_options


async def test_our_own_size_and_recipient_caps_stop_a_message_before_connecting(
    watched_server,
) -> None:
    """MAILER_MAX_MESSAGE_SIZE and MAILER_MAX_RECIPIENTS: errors naming them; the server sees nothing."""
    async with watched_server() as server:
        settings = server.settings(max_message_size=2000, max_recipients=3)
        async with MessageClient(settings) as client:
            with pytest.raises(
                MessageError, match="MAILER_MAX_MESSAGE_SIZE=2,000"
            ) as big:
                await client.send(
                    Message(to="a@example.test", subject="s", body="x" * 3000)
                )
            with pytest.raises(MessageError, match="MAILER_MAX_RECIPIENTS=3") as many:
                await client.send(
                    Message(
                        to=["a@example.test", "b@example.test"],
                        cc="c@example.test",
                        bcc="d@example.test",
                        subject="s",
                        body="b",
                    )
                )
            results = await client.send_many(
                [
                    Message(
                        to=f"u{n}@example.test",
                        bcc=["x@example.test", "y@example.test", "z@example.test"][:n],
                        subject="s",
                        body="b",
                    )
                    for n in range(4)
                ]
            )
    assert big.value.field == "size"
    assert many.value.field == "recipients"
    assert server.commands.count("MAIL") == 3
    assert [r.status for r in results] == ["sent", "sent", "sent", "failed"]
    assert results[3].error is not None
    assert "MAILER_MAX_RECIPIENTS=3" in results[3].error


async def test_the_ehlo_name_is_the_validated_setting(watched_server) -> None:
    """MAILER_SMTP_LOCAL_HOSTNAME reaches EHLO exactly as configured."""
    async with (
        watched_server() as server,
        MessageClient(
            server.settings(smtp_local_hostname="app.example.test")
        ) as client,
    ):
        await client.send(Message(to="a@example.test", subject="s", body="b"))
    assert server.outbox.one().session.helo == "app.example.test"
    assert server.transcripts[0][1] == "C: EHLO app.example.test"


@pytest.mark.parametrize(
    "recipient",
    [
        "b@example.test NOTIFY=NEVER",
        '"foo@x> ORCPT=rfc822;admin@example.test"@example.test',
        "b@example.test>",
    ],
)
async def test_a_hand_made_envelope_cannot_smuggle_esmtp_parameters(
    watched_server, recipient: str
) -> None:
    """Transport.deliver with a crafted RCPT address: refused before MAIL, naming it."""
    envelope = Envelope("shop@example.test", ("a@example.test", recipient))
    async with watched_server() as server:
        transport = SMTPTransport(server.settings())
        try:
            with pytest.raises(HeaderInjectionError) as caught:
                await transport.deliver(envelope, b"Subject: s\r\n\r\nb\r\n")
        finally:
            await transport.aclose()
    assert caught.value.field == "envelope.rcpt_tos[1]"
    assert "MAIL" not in server.commands


async def test_the_inbox_still_receives_a_quoted_local_part_with_a_space(
    watched_server,
) -> None:
    """The strict check is for sending: a server-side Envelope keeps RFC 5321's quoted local parts."""
    async with (
        watched_server() as server,
        aiosmtplib.SMTP(hostname=server.host, port=server.port) as smtp,
    ):
        await smtp.sendmail(
            '"john doe"@example.test',
            ['"a b"@example.test'],
            b"Subject: x\r\n\r\nhi\r\n",
        )
    assert server.outbox.one().envelope.rcpt_tos == ('"a b"@example.test',)
