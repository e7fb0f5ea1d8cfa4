"""check_encodable: text with a lone surrogate is refused, naming where it is."""

from __future__ import annotations

import re

import pytest

from mailer import Message
from mailer.content.addresses import check_encodable
from mailer.exceptions import MessageError


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("\ud800", "'\\ud800' at position 0"),
        ("Zoë \udc80 end", "'\\udc80' at position 4"),
        ("日本語" * 100 + "\udfff", "'\\udfff' at position 300"),
    ],
)
def test_a_lone_surrogate_is_refused_with_its_position(value: str, where: str) -> None:
    """Non-ASCII text holding a lone surrogate raises, naming the field and place."""
    with pytest.raises(
        MessageError, match=re.escape(f"not valid Unicode (lone surrogate {where})")
    ):
        check_encodable(value, field="body")


@pytest.mark.parametrize(
    "value", ["", "plain", "Zoë Ünïcode", "日本語 😀", "\U0010ffff"]
)
def test_any_encodable_text_passes(value: str) -> None:
    """ASCII and any non-surrogate Unicode (astral planes too) are accepted."""
    check_encodable(value, field="body")


@pytest.mark.parametrize("field", ["subject", "body", "html"])
def test_a_message_refuses_a_surrogate_among_other_unicode(field: str) -> None:
    """A message's subject, text and HTML are all checked, not only ASCII ones."""
    values = {"subject": "Grüße", "body": "Grüße", "html": "<p>Grüße</p>"}
    values[field] += "\udc9f"
    with pytest.raises(MessageError, match=f"{field}: not valid Unicode"):
        Message(to="ann@example.test", **values)
