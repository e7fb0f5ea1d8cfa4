"""Address: str() gives back an address that parses to the same value."""

from __future__ import annotations

import pytest

from mailer import Address, Message


@pytest.mark.parametrize(
    "name",
    ["Ann", "O'Brien, Pat", 'The "Best" Shop', "back\\slash, and comma", "Zoë (team)"],
)
def test_str_of_an_address_made_from_user_data_parses_back_to_it(name: str) -> None:
    """A display name with specials is quoted in str(), so it round-trips."""
    address = Address.create("pat@example.test", name, field="to")
    assert Address.parse(str(address), field="to") == address
    assert Message(to=str(address), subject="s", body="b").to == (address,)
