"""SentMail on hostile header values: every reader answers, nothing raises (no sockets).

The standard library's header parser raises IndexError, AttributeError,
TypeError or HeaderParseError on some values (found by fuzzing): ``mail.to``,
``mail.headers`` or ``mail.message_id`` then raised in a user's test, and the
dev inbox answered 500. A hostile header now reads as written.
"""

from __future__ import annotations

import pytest

from mailer.content.message import Envelope
from mailer.records import SentMail


def mail_with(name: str, value: str, *, content_type: str = "text/plain") -> SentMail:
    """A message holding one extra header."""
    raw = (
        "From: Shop <shop@example.test>\r\nTo: ann@example.test\r\n"
        f"Subject: hello\r\n{name}: {value}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\n\r\nthe body\r\n"
    ).encode("utf-8", "surrogateescape")
    return SentMail(Envelope("shop@example.test", ("ann@example.test",)), raw)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Cc", '"'),
        ("Cc", "\udcff@"),
        ("Cc", " .a ?=@[@"),
        ("Reply-To", ".<"),
        ("Reply-To", "():=?unknown-8bit?q?=FF?="),
        ("To", "=?utf-8?b?*?=,.'é =?utf-8?b??=)"),
        ("Message-ID", '<(\\éé>*=?utf-8?q?.@"'),
    ],
)
def test_a_header_the_parser_cannot_read_hides_nothing_else(
    name: str, value: str
) -> None:
    """Every property answers; the hostile header reads as written."""
    mail = mail_with(name, value)
    assert mail.subject == "hello"
    assert mail.from_ == ("shop@example.test",)
    assert "ann@example.test" in mail.to or name == "To"
    assert mail.text == "the body\n"
    assert (name, mail.header(name)) in mail.headers
    assert mail.header(name) is not None
    # Lenient readings of the hostile field itself: no exception.
    assert isinstance(mail.cc, tuple)
    assert isinstance(mail.reply_to, tuple)
    assert isinstance(mail.bcc, tuple)
    assert mail.message_id is None or isinstance(mail.message_id, str)
    assert mail.attachments == ()


def test_a_broken_cc_still_yields_its_addresses() -> None:
    """A Cc the strict parser rejects is read leniently: its address is found."""
    mail = mail_with("Cc", "Bob <bob@example.test>, .<")
    assert "bob@example.test" in mail.cc
    assert "bob@example.test" not in mail.bcc


def test_a_text_part_in_an_unknown_charset_is_read_as_utf8() -> None:
    """charset="no-such-charset" (LookupError in get_content): read as UTF-8."""
    mail = mail_with(
        "X-Test", "1", content_type='text/plain; charset="no-such-charset"'
    )
    assert mail.text == "the body\n"
