"""One-click unsubscribe: List-Unsubscribe and List-Unsubscribe-Post (RFC 8058)."""

from __future__ import annotations

import pytest

from mailer import Message
from mailer.content.addresses import Address
from mailer.exceptions import HeaderInjectionError, MessageError
from mailer.records import SentMail

SENDER = Address.parse("news@example.test", field="sender")


def sent(message: Message) -> SentMail:
    return SentMail(envelope=message.envelope(SENDER), raw=message.to_bytes(SENDER))


def test_https_url_adds_both_headers() -> None:
    """An https URL gives List-Unsubscribe and the One-Click POST header."""
    mail = sent(
        Message(
            to="a@example.test",
            subject="s",
            body="b",
            unsubscribe="https://example.test/u/abc?x=1",
        )
    )
    assert mail.header("List-Unsubscribe") == "<https://example.test/u/abc?x=1>"
    assert mail.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"


def test_https_and_mailto_are_listed_together() -> None:
    """With a mailto fallback both URLs are listed, https first."""
    mail = sent(
        Message(
            to="a@example.test",
            subject="s",
            body="b",
            unsubscribe=[
                "mailto:unsub@example.test?subject=u",
                "https://example.test/u",
            ],
        )
    )
    assert mail.header("List-Unsubscribe") == (
        "<https://example.test/u>, <mailto:unsub@example.test?subject=u>"
    )


def test_mailto_alone_has_no_post_header() -> None:
    """A mailto alone is not one-click: no List-Unsubscribe-Post."""
    mail = sent(
        Message(
            to="a@example.test",
            subject="s",
            body="b",
            unsubscribe="mailto:unsub@example.test",
        )
    )
    assert mail.header("List-Unsubscribe") == "<mailto:unsub@example.test>"
    assert mail.header("List-Unsubscribe-Post") is None


@pytest.mark.parametrize(
    "url",
    [
        "http://example.test/u",
        "ftp://example.test/u",
        "example.test/u",
        "https:///nohost",
    ],
)
def test_non_https_one_click_url_is_an_error(url: str) -> None:
    """A one-click URL that is not https is refused, naming the field."""
    with pytest.raises(MessageError, match=r"^unsubscribe: ") as caught:
        Message(to="a@example.test", subject="s", body="b", unsubscribe=url)
    assert caught.value.field == "unsubscribe"


def test_line_break_in_url_is_an_injection() -> None:
    """CR/LF in the URL cannot add a header."""
    with pytest.raises(HeaderInjectionError, match=r"^unsubscribe: "):
        Message(
            to="a@example.test",
            subject="s",
            body="b",
            unsubscribe="https://example.test/u\r\nBcc: x@example.test",
        )


def test_setting_it_twice_is_refused() -> None:
    """unsubscribe= and a hand-written List-Unsubscribe header conflict."""
    with pytest.raises(MessageError, match="set by unsubscribe="):
        Message(
            to="a@example.test",
            subject="s",
            body="b",
            unsubscribe="https://example.test/u",
            headers={"List-Unsubscribe": "<https://example.test/v>"},
        )


def test_messages_with_the_same_url_are_equal() -> None:
    """unsubscribe takes part in equality, like every Message field."""

    def make(url: str) -> Message:
        return Message(to="a@example.test", subject="s", body="b", unsubscribe=url)

    assert make("https://example.test/u") == make("https://example.test/u")
    assert make("https://example.test/u") != make("https://example.test/v")
