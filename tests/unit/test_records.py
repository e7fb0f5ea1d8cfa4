"""SentMail: the conveniences every double's records share, Bcc above all."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailer import Address, Message
from mailer.content.message import Envelope
from mailer.testing import Attachment, SentMail

SENDER = Address.parse("Shop <shop@example.test>", field="sender")


def sent(message: Message) -> SentMail:
    return SentMail(envelope=message.envelope(SENDER), raw=message.to_bytes(SENDER))


def test_bcc_is_the_envelope_minus_to_and_cc_without_case() -> None:
    """Recipients on the envelope but in neither To nor Cc are Bcc (case-insensitive)."""
    mail = SentMail(
        envelope=Envelope(
            "s@example.test",
            ("ann@example.test", "CAROL@EXAMPLE.TEST", "audit@example.test"),
        ),
        raw=b"To: Ann <Ann@Example.Test>\r\nCc: carol@example.test\r\n\r\nx\r\n",
    )
    assert mail.bcc == ("audit@example.test",)


def test_the_envelope_is_readable_as_mail_from_and_rcpt_tos() -> None:
    """mail.rcpt_tos and mail.mail_from are the envelope's, as in Mail(rcpt_tos=...) (12.17)."""
    mail = sent(
        Message(
            to="Ann <ann@example.test>", bcc="audit@example.test", subject="s", body="b"
        )
    )
    assert mail.rcpt_tos == mail.envelope.rcpt_tos
    assert mail.rcpt_tos == ("ann@example.test", "audit@example.test")
    assert mail.mail_from == mail.envelope.mail_from == "shop@example.test"


def test_bcc_compares_idna_and_unicode_domains_as_equal() -> None:
    """A Unicode domain in To and its xn-- form on the envelope are one address."""
    mail = sent(
        Message(to="info@bücher.example", bcc="x@example.test", subject="s", body="b")
    )
    assert mail.envelope.rcpt_tos == ("info@xn--bcher-kva.example", "x@example.test")
    assert mail.bcc == ("x@example.test",)


def test_headers_reply_to_and_message_id() -> None:
    """Header conveniences decode values and keep order."""
    mail = sent(
        Message(
            to="a@example.test",
            reply_to="Help <help@example.test>",
            subject="Grüße",
            body="b",
            headers={"X-Tag": "t1"},
        )
    )
    assert mail.reply_to == ("help@example.test",)
    assert mail.header("x-tag") == "t1"
    assert mail.header("X-Missing") is None
    assert ("Subject", "Grüße") in mail.headers
    assert mail.message_id is not None
    assert mail.message_id.startswith("<")
    assert mail.from_ == ("shop@example.test",)


def test_text_and_html_bodies() -> None:
    """text and html give each part with LF line ends, None when absent."""
    mail = sent(
        Message(to="a@example.test", subject="s", body="one\ntwo\n", html="<p>x</p>")
    )
    assert mail.text == "one\ntwo\n"
    assert mail.html == "<p>x</p>"
    assert sent(Message(to="a@example.test", subject="s", body="b")).html is None


def test_attachments_are_listed_with_their_bytes() -> None:
    """A received message's attachments are decoded (mailer sends none itself)."""
    message = EmailMessage()
    message["To"] = "a@example.test"
    message["Subject"] = "Invoice"
    message.set_content("See attached.\n")
    message.add_attachment(
        b"%PDF-1.7 data", maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    mail = SentMail(
        envelope=Envelope("s@example.test", ("a@example.test",)), raw=message.as_bytes()
    )
    assert mail.attachments == (
        Attachment(
            filename="invoice.pdf",
            content_type="application/pdf",
            content=b"%PDF-1.7 data",
        ),
    )
    assert mail.text == "See attached.\n"
    assert sent(Message(to="a@example.test", subject="s", body="b")).attachments == ()


def test_extract_finds_codes_and_links() -> None:
    """extract() returns the first group (or the match) from the text, else the HTML."""
    mail = sent(
        Message(
            to="a@example.test",
            subject="Reset",
            body="Your code: 482913\n",
            html='<a href="https://shop.example.test/r/abc">reset</a>',
        )
    )
    assert mail.extract(r"code: (\d{6})") == "482913"
    assert mail.extract(r"https://\S+/r/\w+") == "https://shop.example.test/r/abc"
    with pytest.raises(
        AssertionError, match=r"'token=\(\\\\w\+\)' not found in the message 'Reset'"
    ):
        mail.extract(r"token=(\w+)")
