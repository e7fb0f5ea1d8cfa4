"""An invalid address gets the validator's own reason for it (issue 12.2)."""

from __future__ import annotations

import pytest

from mailer import InvalidAddressError, Message


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("broken", "An email address must have an @-sign."),
        ("ann@", "There must be something after the @-sign."),
        ("@example.test", "There must be something before the @-sign."),
        (
            "a b@example.test",
            "The email address contains invalid characters before the @-sign: SPACE.",
        ),
    ],
)
def test_the_reason_is_the_validators_own(address: str, reason: str) -> None:
    """'broken' says it lacks an @-sign (it said: nothing before the @-sign)."""
    with pytest.raises(InvalidAddressError) as caught:
        Message(to=address, subject="s", body="b")
    assert str(caught.value) == f"to: invalid address '{address}': {reason}"
