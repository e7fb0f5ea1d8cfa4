"""SentMail reads headers as mail clients do: UTF-8 (RFC 6532) and split encoded words."""

from __future__ import annotations

from mailer.content.message import Envelope
from mailer.records import SentMail
from mailer.testing import Addr, Mail


def test_utf8_header_address_is_read_as_utf8() -> None:
    """An RFC 6532 To address reads as text, so it is not also counted as Bcc (issue 12.13)."""
    raw = "From: s@example.test\r\nTo: Zoë <zoë@example.test>\r\nSubject: ça\r\n\r\nhi\r\n".encode()
    mail = SentMail(
        envelope=Envelope("s@example.test", ("zoë@example.test",), True), raw=raw
    )
    assert mail.to == ("zoë@example.test",)
    assert mail.bcc == ()
    assert mail.subject == "ça"
    assert mail.header("To") == "Zoë <zoë@example.test>"
    assert mail == Mail(to=Addr("zoë@example.test"))


def test_display_name_split_across_encoded_words_decodes_as_written() -> None:
    """Two adjacent encoded words join without a space (RFC 2047 6.2; gh-92081; issue 12.14)."""
    raw = (
        b"From: =?utf-8?q?Nod?= =?utf-8?q?emailer?= <n@example.test>\r\n"
        b"To: =?utf-8?b?5qCq5byP5Lya56S+?= =?utf-8?b?44K144Oz44OX44Or?= <a@example.test>,"
        b" b@example.test\r\n"
        b"Subject: x\r\n\r\nhi\r\n"
    )
    mail = SentMail(envelope=Envelope("n@example.test", ("a@example.test",)), raw=raw)
    assert mail.header("From") == "Nodemailer <n@example.test>"
    assert mail.header("To") == "株式会社サンプル <a@example.test>, b@example.test"
    assert ("From", "Nodemailer <n@example.test>") in mail.headers
    assert mail.to == ("a@example.test", "b@example.test")


def test_dkim_is_none_without_a_signature_and_reads_its_tags() -> None:
    """SentMail.dkim is None when unsigned, else d=, s=, a= and h= of the header."""
    plain = SentMail(
        envelope=Envelope("s@example.test", ()), raw=b"Subject: x\r\n\r\nb\r\n"
    )
    assert plain.dkim is None
    signed = SentMail(
        envelope=Envelope("s@example.test", ()),
        raw=(
            b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
            b" d=example.test; s=mail2026; h=from : from : to :\r\n subject; bh=x; b=y\r\n"
            b"Subject: x\r\n\r\nb\r\n"
        ),
    )
    assert signed.dkim is not None
    assert (signed.dkim.domain, signed.dkim.selector, signed.dkim.algorithm) == (
        "example.test",
        "mail2026",
        "ed25519-sha256",
    )
    assert signed.dkim.signed_headers == ("from", "from", "to", "subject")
