"""Real-world content over real SMTP: the MIME tree, byte-exact parts, DKIM, resends.

DKIM signatures are checked twice: by mailer.testing.verify_dkim (dkimpy, the
library mailer signs with) and by ``independent_verify`` below, which shares no
code with dkimpy: relaxed/relaxed canonicalisation written from RFC 6376 3.4.2
and 3.4.4, header selection from 5.4.2, and the signature check in OpenSSL via
``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailer import Attachment, Message, MessageClient, send_messages
from mailer.config.settings import MailerSettings
from mailer.testing import END_OF_DATA, SMTPTestServer, make_dkim_key, verify_dkim


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(part, depth: int = 0) -> list[str]:  # type: ignore[no-untyped-def]
    shown = ["  " * depth + part.get_content_type()]
    if part.is_multipart():
        for child in part.iter_parts():
            shown += tree(child, depth + 1)
    return shown


async def test_text_html_two_inline_images_and_two_files_arrive_exactly(
    smtp_server: SMTPTestServer,
    settings_for: Callable[..., MailerSettings],
    tmp_path: Path,
) -> None:
    """The smallest correct tree arrives; every part hash-equals its source; cid: resolves."""
    big = tmp_path / "archive.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024))
    logo, banner = os.urandom(3000), os.urandom(7000)
    text_file = b"col1,col2\r\nbare lf\nno final newline  "
    attachments = [
        Attachment(
            logo, filename="logo.png", disposition="inline", content_id="logo@shop.test"
        ),
        Attachment(
            banner,
            filename="bannière.gif",
            disposition="inline",
            content_id="banner@shop.test",
        ),
        Attachment(text_file, filename="Übersicht März.csv"),
        Attachment.from_path(big),
    ]
    message = Message(
        to="ann@example.test",
        subject="Your order",
        body="See the attached files.\n",
        html='<p><img src="cid:logo@shop.test"> <img src="cid:banner@shop.test"></p>',
        attachments=attachments,
    )
    async with MessageClient(settings_for(smtp_server)) as client:
        result = await client.send(message)
    assert result.is_sent
    [mail] = smtp_server.outbox
    assert tree(mail.message) == [
        "multipart/mixed",
        "  multipart/related",
        "    multipart/alternative",
        "      text/plain",
        "      text/html",
        "    image/png",
        "    image/gif",
        "  text/csv",
        "  application/octet-stream",
    ]
    received = {a.filename: a for a in mail.attachments}
    assert digest(received["logo.png"].content) == digest(logo)
    assert digest(received["bannière.gif"].content) == digest(banner)
    assert digest(received["Übersicht März.csv"].content) == digest(text_file)
    assert digest(received["archive.bin"].content) == digest(big.read_bytes())
    assert received["archive.bin"].size == 5 * 1024 * 1024
    assert mail.text == "See the attached files.\n"
    content_ids = {a.content_id for a in mail.attachments if a.disposition == "inline"}
    assert (
        set(re.findall(r'src="cid:([^"]+)"', mail.html or ""))
        == content_ids
        == {
            "logo@shop.test",
            "banner@shop.test",
        }
    )


def dkim_settings(
    settings_for: Callable[..., MailerSettings],
    server: SMTPTestServer,
    private_pem: str,
    **overrides: object,
) -> MailerSettings:
    return settings_for(
        server,
        dkim_domain="shop.example.test",
        dkim_selector="mail2026",
        dkim_private_key=private_pem,
        from_="Example Shop <news@shop.example.test>",
        **overrides,
    )


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_a_signed_message_verifies_as_received_by_two_implementations(
    kind: str,
    smtp_server: SMTPTestServer,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """What the server received verifies with the public key: dkimpy and an independent check."""
    private_pem, record = make_dkim_key(kind)  # type: ignore[arg-type]
    message = Message(
        to="Zoë <zoe@example.test>",
        cc="cy@example.test",
        reply_to="help@shop.example.test",
        subject="Spring sale: ünïcode   and spaces",
        body="Line one  \n\n\nLine two with trailing spaces   \n\n\n",
        html="<p>Sale</p>",
        attachments=[Attachment(b"%PDF-1.7", filename="flyer.pdf")],
        unsubscribe=["https://shop.example.test/u/1", "mailto:u@shop.example.test"],
    )
    async with MessageClient(
        dkim_settings(settings_for, smtp_server, private_pem)
    ) as client:
        assert (await client.send(message)).is_sent
    [mail] = smtp_server.outbox
    info = verify_dkim(mail, record)
    assert (info.domain, info.selector) == ("shop.example.test", "mail2026")
    assert info.algorithm == f"{kind}-sha256"
    assert info.signed_headers == (
        "from",
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "reply-to",
        "list-unsubscribe",
        "list-unsubscribe-post",
    )
    assert independent_verify(mail.raw, record)
    # The check can fail: one changed byte in the body breaks both verifiers.
    tampered = mail.raw.replace(b"Line two", b"Line 2!!")
    assert not independent_verify(tampered, record)
    with pytest.raises(AssertionError, match="does not verify"):
        verify_dkim(tampered, record)
    # And another key does not verify it.
    with pytest.raises(AssertionError, match="does not verify"):
        verify_dkim(mail, make_dkim_key(kind)[1])  # type: ignore[arg-type]


async def test_a_retried_message_carries_a_byte_identical_signature(
    smtp_server: SMTPTestServer,
    settings_for: Callable[..., MailerSettings],
) -> None:
    """Delivered, no reply, resent: the two copies the server kept are the same bytes."""
    private_pem, record = make_dkim_key("ed25519")
    smtp_server.faults.disconnect(after=END_OF_DATA, keep=True, times=1)
    settings = dkim_settings(settings_for, smtp_server, private_pem)
    async with MessageClient(settings) as client:
        result = await client.send(
            Message(to="ann@example.test", subject="s", body="b\n")
        )
    assert (result.is_sent, result.attempts) == (True, 2)
    first, second = smtp_server.outbox
    assert first.header("DKIM-Signature") is not None
    assert first.header("DKIM-Signature") == second.header("DKIM-Signature")
    assert first.raw == second.raw
    verify_dkim(second, record)


async def test_a_resumed_message_carries_a_byte_identical_signature(
    smtp_server: SMTPTestServer,
    settings_for: Callable[..., MailerSettings],
    tmp_path: Path,
) -> None:
    """A journal resume rebuilds the message with its Message-ID and Date: same signed bytes."""
    private_pem, record = make_dkim_key("rsa")
    journal = tmp_path / "batch.journal"
    rows = [{"email": "ann@example.test", "name": "Ann", "customer_id": "C-1"}]
    # The first run delivers, then loses the reply; with one attempt allowed the
    # message stays in doubt and the resume sends it again.
    smtp_server.faults.disconnect(after=END_OF_DATA, keep=True, times=1)
    first_run = dkim_settings(settings_for, smtp_server, private_pem, max_attempts=1)
    report = await send_messages(
        "welcome", rows, settings=first_run, context={"plan": "pro"}, journal=journal
    )
    assert report.sent == 0
    resume = dkim_settings(settings_for, smtp_server, private_pem)
    report = await send_messages(
        "welcome", rows, settings=resume, context={"plan": "pro"}, journal=journal
    )
    assert report.sent == 1
    first, resent = smtp_server.outbox
    assert first.message_id == resent.message_id
    assert first.header("Date") == resent.header("Date")
    assert first.header("DKIM-Signature") == resent.header("DKIM-Signature")
    assert first.raw == resent.raw
    assert independent_verify(resent.raw, record)


def independent_verify(raw: bytes, record: str) -> bool:
    """Return whether the first DKIM-Signature of ``raw`` verifies with ``record``."""
    return verify(raw, record)


_WSP_RUN = re.compile(rb"[ \t]+")


def _split(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields, body


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    # RFC 6376 3.4.2: lower-case name, unfold, runs of WSP to one space, trim.
    value = value.replace(b"\r\n", b"")
    value = _WSP_RUN.sub(b" ", value).strip(b" ")
    return name.strip().lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    # RFC 6376 3.4.4: WSP runs to one space, no WSP at line ends, no empty
    # lines at the end; a non-empty body ends with CRLF.
    lines = [_WSP_RUN.sub(b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def _tags(value: bytes) -> dict[str, bytes]:
    tags = {}
    for item in value.split(b";"):
        key, eq, tag_value = item.partition(b"=")
        if eq:
            tags[key.strip().decode()] = re.sub(rb"\s+", b"", tag_value)
    return tags


def verify(raw: bytes, record: str) -> bool:
    """Return whether the first DKIM-Signature of ``raw`` verifies with ``record``."""
    fields, body = _split(raw)
    signature_field = next(f for f in fields if f[0].lower() == b"dkim-signature")
    tags = _tags(signature_field[1])
    assert tags["c"] == b"relaxed/relaxed"
    if base64.b64decode(tags["bh"]) != hashlib.sha256(_relaxed_body(body)).digest():
        return False
    # RFC 6376 5.4.2: each name in h= takes the last unused instance, bottom up;
    # a name with none left (over-signing) contributes nothing.
    remaining = [f for f in fields if f is not signature_field]
    data = b""
    for name in tags["h"].split(b":"):
        for index in range(len(remaining) - 1, -1, -1):
            if remaining[index][0].strip().lower() == name.lower():
                data += _relaxed_header(*remaining.pop(index)) + b"\r\n"
                break
    unsigned = re.sub(rb"(\bb=)[^;]*", rb"\1", signature_field[1])
    data += _relaxed_header(b"DKIM-Signature", unsigned)
    signature = base64.b64decode(tags["b"])
    key_data = base64.b64decode(_tags(record.encode())["p"])
    if tags["a"] == b"ed25519-sha256":
        public = ed25519.Ed25519PublicKey.from_public_bytes(key_data)
        try:
            public.verify(signature, hashlib.sha256(data).digest())
        except InvalidSignature:
            return False
        return True
    rsa_key = serialization.load_der_public_key(key_data)
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    try:
        rsa_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


async def test_an_attachment_over_the_servers_size_is_refused_before_mail_from(
    settings_for: Callable[..., MailerSettings],
) -> None:
    """A message the server's SIZE cannot take is never uploaded; nothing arrives."""
    async with SMTPTestServer(size_limit=100_000) as server:
        message = Message(
            to="ann@example.test",
            subject="big",
            body="b",
            attachments=[Attachment(os.urandom(200_000), filename="big.bin")],
        )
        async with MessageClient(settings_for(server)) as client:
            [result] = await client.send_many([message])
        assert not result.is_sent
        assert result.error is not None
        assert "accepts messages of at most 100,000 bytes (SIZE)" in result.error
        assert server.outbox == []
        assert not any(
            line.startswith("C: MAIL") for t in server.transcripts for line in t
        )


async def test_an_attachment_over_max_message_size_is_refused_before_connecting(
    settings_for: Callable[..., MailerSettings], smtp_server: SMTPTestServer
) -> None:
    """MAILER_MAX_MESSAGE_SIZE counts attachments and is checked before any connection."""
    message = Message(
        to="ann@example.test",
        subject="big",
        body="b",
        attachments=[Attachment(os.urandom(20_000), filename="big.bin")],
    )
    async with MessageClient(
        settings_for(smtp_server, max_message_size=10_000)
    ) as client:
        [result] = await client.send_many([message])
    assert result.error is not None
    # The attachments alone are over: refused before the message is built.
    assert result.error.startswith("size: the attachments are ")
    assert "over MAILER_MAX_MESSAGE_SIZE=10,000" in result.error
    assert smtp_server.sessions_opened == 0
