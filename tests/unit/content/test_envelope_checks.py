"""Envelope: a hand-made envelope's bad address is named; Message.envelope's order."""

from __future__ import annotations

import pytest

from mailer import Address, Message
from mailer.content.message import Envelope
from mailer.exceptions import HeaderInjectionError, MessageError


@pytest.mark.parametrize(
    ("mail_from", "rcpt_tos", "field"),
    [
        ("a@x.test\r\nRCPT TO:<e@evil.test>", ("b@x.test",), "envelope.mail_from"),
        ("a@x.test", ("b@x.test", "c@x.test", "d@x.test\n"), "envelope.rcpt_tos[2]"),
        ("a@x.test", ("b\x00@x.test",), "envelope.rcpt_tos[0]"),
        ("a@x.test", ("b@x.test", "c\u2028@x.test"), "envelope.rcpt_tos[1]"),
    ],
)
def test_a_control_character_is_refused_naming_its_address(
    mail_from: str, rcpt_tos: tuple[str, ...], field: str
) -> None:
    """The error names the one address holding the control character."""
    with pytest.raises(HeaderInjectionError) as caught:
        Envelope(mail_from, rcpt_tos)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: control character")


def test_a_lone_surrogate_is_refused_naming_its_address() -> None:
    """Text that cannot be UTF-8 is refused too, naming the address."""
    with pytest.raises(MessageError) as caught:
        Envelope("a@x.test", ("b@x.test", "zoë\udc80@x.test"))
    assert caught.value.field == "envelope.rcpt_tos[1]"


def test_a_clean_envelope_is_made_as_given() -> None:
    """Unicode addresses without controls are accepted unchanged."""
    envelope = Envelope("a@x.test", ("zoë@x.test", "b@x.test"), True)
    assert envelope.rcpt_tos == ("zoë@x.test", "b@x.test")


def test_the_envelope_lists_each_recipient_once_in_to_cc_bcc_order() -> None:
    """Repeats across To, Cc and Bcc are dropped; the first place is kept."""
    message = Message(
        to=["b@x.test", "a@x.test", "b@x.test"],
        cc=["c@x.test", "a@x.test"],
        bcc=["d@x.test", "c@x.test"],
        subject="s",
        body="b",
    )
    sender = Address.parse("s@x.test", field="sender")
    envelope = message.envelope(sender)
    assert envelope.mail_from == "s@x.test"
    assert envelope.rcpt_tos == ("b@x.test", "a@x.test", "c@x.test", "d@x.test")
    assert envelope.smtputf8 is False


@pytest.mark.parametrize("where", ["to", "cc", "bcc", "reply_to", "sender"])
def test_a_unicode_local_part_anywhere_needs_smtputf8(where: str) -> None:
    """SMTPUTF8 is asked for when any address's local part is not ASCII."""
    values: dict[str, str] = {"to": "a@x.test"}
    values[where] = "zoë@x.test"
    message = Message(subject="s", body="b", **values)  # type: ignore[arg-type]
    sender = Address.parse("s@x.test", field="sender")
    assert message.envelope(sender).smtputf8 is True
