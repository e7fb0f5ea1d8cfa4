"""Matchers: field matchers, Mail over every message shape, and mock assertions."""

from __future__ import annotations

import re
from email.message import EmailMessage
from unittest.mock import ANY, AsyncMock, Mock, call

import pytest

from mailer import Address, Message
from mailer.content.message import Envelope
from mailer.testing import (
    Addr,
    AllOf,
    AnyOf,
    Contains,
    Mail,
    Not,
    Predicate,
    Regex,
    SentMail,
)

SENDER = Address.parse("Shop <shop@example.test>", field="sender")


def sent(message: Message, **envelope: object) -> SentMail:
    """The SentMail a transport would record for ``message``."""
    env = message.envelope(SENDER)
    return SentMail(envelope=env, raw=message.to_bytes(SENDER), **envelope)  # type: ignore[arg-type]


RESET = Message(
    to="Bob <Bob@Example.test>",
    cc="carol@example.test",
    bcc="audit@example.test",
    subject="Reset your password",
    body="Your code: 123456\n",
    html="<p>Your code: <b>123456</b></p>",
    headers={"X-Campaign": "reset"},
)


def test_contains_regex_and_addr() -> None:
    """Field matchers compare as documented, including case and display names."""
    assert Contains("code") == "Your code: 1"
    assert Contains("CODE", case_sensitive=False) == "Your code: 1"
    assert Contains("CODE") != "Your code: 1"
    assert Contains("b@x.test") == ("a@x.test", "b@x.test")
    assert Contains("x") != 42
    assert Regex(r"\d{6}") == "code 123456"
    assert Regex(re.compile("^Re")) == "Reset"
    assert Regex("^x") != None  # noqa: E711 - matchers compare with anything
    assert Addr("BOB@example.TEST") == "Bob <bob@example.test>"
    assert Addr("bob@example.test") == ("ann@example.test", "bob@example.test")
    assert Addr("bob@example.test") != ("ann@example.test",)
    assert Addr("bob@example.test") == Address.parse(
        "Bob <bob@example.test>", field="to"
    )
    assert Addr("josé@bücher.example") == "josé@xn--bcher-kva.example"


def test_any_of_all_of_not_and_predicates() -> None:
    """Combinators take matchers or plain values; predicates are plain callables."""
    assert AnyOf("a", Contains("zz")) == "xzzx"
    assert AnyOf("a", "b") != "c"
    assert AllOf(Contains("a"), Contains("b")) == "ab"
    assert AllOf(Contains("a"), Contains("b")) != "a"
    assert Not(Contains("spam")) == "ham"
    assert Not("x") != "x"
    assert Predicate(str.isupper) == "LOUD"
    assert repr(Predicate(str.isupper)) == "Predicate(isupper)"
    assert repr(AnyOf("a", Contains("b"))) == "AnyOf('a', Contains('b'))"
    with pytest.raises(ValueError, match="at least one"):
        AnyOf()


def test_mail_compares_only_the_fields_given() -> None:
    """Mail(...) on a SentMail: each field kind, and a miss on any one field."""
    mail = sent(RESET)
    assert Mail() == mail
    assert (
        Mail(
            to="bob@example.test",
            cc=["CAROL@example.test"],
            bcc=["audit@example.test"],
            from_=Addr("shop@example.test"),
            subject=Contains("Reset"),
            text="Your code: 123456\n",
            html=Regex(r"<b>\d{6}</b>"),
            mail_from="shop@example.test",
            rcpt_tos=["Bob@example.test", "carol@example.test", "audit@example.test"],
            headers={"X-Campaign": "reset", "List-Unsubscribe": None},
            attachments=0,
            message_id=Regex(r"^<.+@example\.test>$"),
        )
        == mail
    )
    assert Mail(to=["bob@example.test", "x@example.test"]) != mail
    assert Mail(bcc=[]) != mail
    assert Mail(subject="Reset") != mail
    assert Mail(headers={"X-Campaign": "other"}) != mail
    assert Mail(text=lambda text: "123456" in text) == mail


def test_unknown_fields_are_refused_with_a_suggestion() -> None:
    """A typo in a field name is a TypeError, not a matcher that always passes."""
    with pytest.raises(
        TypeError, match=r"unknown field 'subjet' \(did you mean 'subject'\?\)"
    ):
        Mail(subjet="x")


def test_a_mail_refused_for_an_unknown_field_shows_in_pytests_traceback() -> None:
    """The half-made Mail in the traceback's locals has a repr (12.17)."""
    with pytest.raises(TypeError) as caught:
        Mail(subject="Hi", subjet="x")
    half_made = caught.traceback[-1].frame.f_locals["self"]
    assert repr(half_made) == "Mail(subject='Hi', subjet='x')"
    shown = str(caught.getrepr(showlocals=True))  # what pytest -l prints
    assert "no attribute" not in shown
    assert "Mail(subject='Hi', subjet='x')" in shown


def test_a_miss_explains_each_differing_field() -> None:
    """misses() names every field that differs, with what was wanted and found."""
    mail = sent(RESET)
    matcher = Mail(
        subject=Contains("Welcome"), to="ann@example.test", text=Contains("code")
    )
    assert matcher.misses(mail) == [
        "subject: wanted Contains('Welcome'), got 'Reset your password'",
        "to: wanted Addr('ann@example.test'), got ('Bob@example.test',)",
    ]
    assert matcher.explain(mail) is not None
    assert Mail(subject=Contains("Reset")).explain(mail) is None


def test_mail_matches_a_message_an_email_message_and_bytes() -> None:
    """The same Mail works on what a mocked send receives and on parsed messages."""
    matcher = Mail(to=Addr("bob@example.test"), subject=Contains("Reset"))
    assert matcher == RESET
    assert Mail(bcc=["audit@example.test"], text=Contains("123456")) == RESET
    assert Mail(headers={"x-campaign": "reset"}) == RESET
    raw = RESET.to_bytes(SENDER)
    assert matcher == raw
    assert matcher == RESET.to_email_message(SENDER)
    assert Mail(bcc=[]).misses(raw) == [
        "bcc: no envelope in a parsed message (use a SentMail)"
    ]
    assert Mail(from_="shop@example.test").misses(RESET) == [
        "from_: the Message has no sender (MAILER_FROM applies)"
    ]
    assert Mail(tls="starttls").misses(sent(RESET)) == [
        "tls: only mail received by the test SMTP server has it"
    ]
    assert Mail(subject="x") != 3
    assert Mail().misses(3) == ["not a message: 3"]


def test_mail_works_inside_mock_assertions() -> None:
    """call(), assert_called_once_with, assert_awaited_once_with, assert_has_calls."""
    send = Mock()
    send(RESET)
    send.assert_called_once_with(Mail(to="bob@example.test"))
    assert send.call_args == call(Mail(subject=Contains("Reset")))
    with pytest.raises(AssertionError):
        send.assert_called_once_with(Mail(to="ann@example.test"))


async def test_mail_in_await_assertions_shows_why_it_missed() -> None:
    """A failed assert_awaited_once_with prints the fields that differed."""
    send = AsyncMock()
    await send(RESET, priority=1)
    send.assert_awaited_once_with(Mail(subject=Contains("Reset")), priority=ANY)
    send.assert_has_awaits([call(Mail(cc="carol@example.test"), priority=1)])
    send.assert_has_calls([call(Mail(to=Addr("bob@example.test")), priority=1)])
    with pytest.raises(AssertionError) as caught:
        send.assert_awaited_once_with(Mail(subject="Welcome"), priority=1)
    assert (
        "Mail(subject='Welcome') <missed: subject: wanted 'Welcome', got 'Reset your password'>"
        in str(caught.value)
    )


def test_a_mail_record_keeps_its_envelope_when_matched() -> None:
    """Envelope-only facts (Bcc, RCPT TO) are matched on SentMail records."""
    mail = SentMail(
        envelope=Envelope("s@example.test", ("a@example.test", "hidden@example.test")),
        raw=b"To: a@example.test\r\nSubject: x\r\n\r\nbody\r\n",
    )
    assert Mail(bcc=["hidden@example.test"], to=["a@example.test"]) == mail
    assert Mail(mail_from="S@EXAMPLE.TEST") == mail


def test_email_message_from_elsewhere_can_be_matched() -> None:
    """An EmailMessage built by hand matches on its headers and body."""
    message = EmailMessage()
    message["To"] = "Zoë <zoe@example.test>"
    message["Subject"] = "Grüße"
    message.set_content("hello\n")
    assert Mail(to="zoe@example.test", subject="Grüße", text="hello\n") == message


def test_a_message_with_its_own_sender_and_envelope_fields() -> None:
    """On a Message: from_, mail_from and rcpt_tos come from its own fields."""
    message = Message(
        to="Ann <ann@example.test>",
        bcc=["ann@example.test", "b@bücher.example"],
        sender="Shop <shop@example.test>",
        subject="s",
        body="b",
    )
    assert Mail(from_=["shop@example.test"], mail_from="shop@example.test") == message
    assert Mail(rcpt_tos=["ann@example.test", "b@xn--bcher-kva.example"]) == message
    assert Mail(message_id=Contains("@")).misses(message) == [
        "message_id: a Message gets its Message-ID when it is sent"
    ]


def test_bytes_and_address_lists_with_matchers_inside() -> None:
    """Text matchers read bytes; an address list may hold matchers."""
    assert Contains("hello") == b"say hello"
    assert Regex(r"h.llo") == b"say hello"
    mail = sent(RESET)
    assert Mail(to=[Regex(r"^Bob@")]) == mail
    assert Mail(cc=[Addr("carol@example.test"), "x@example.test"]) != mail
    assert Mail(to=Contains("bob", case_sensitive=False)) == mail


def test_attachments_by_count_or_by_names() -> None:
    """attachments= takes a count or the file names, in order."""
    message = EmailMessage()
    message["To"] = "a@example.test"
    message["Subject"] = "Files"
    message.set_content("see attached\n")
    message.add_attachment(b"1", maintype="text", subtype="plain", filename="a.txt")
    message.add_attachment(b"2", maintype="text", subtype="plain", filename="b.txt")
    assert Mail(attachments=2) == message
    assert Mail(attachments=["a.txt", "b.txt"]) == message
    assert Mail(attachments=["b.txt", "a.txt"]) != message
    assert Mail(attachments=lambda found: found[0].content == b"1") == message
