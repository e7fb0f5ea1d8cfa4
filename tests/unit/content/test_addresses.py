"""Address: str() gives back an address that parses to the same value."""

from __future__ import annotations

import email_validator
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer import Address, Message
from mailer.content import addresses


@pytest.mark.parametrize(
    "name",
    ["Ann", "O'Brien, Pat", 'The "Best" Shop', "back\\slash, and comma", "Zoë (team)"],
)
def test_str_of_an_address_made_from_user_data_parses_back_to_it(name: str) -> None:
    """A display name with specials is quoted in str(), so it round-trips."""
    address = Address.create("pat@example.test", name, field="to")
    assert Address.parse(str(address), field="to") == address
    assert Message(to=str(address), subject="s", body="b").to == (address,)


TRICKY = [
    "ann@example.test",
    "ann@EXAMPLE.test",
    "zoë@example.test",
    "ann@bücher.example",
    "ann@xn--bcher-kva.example",
    "ann@-bad.example",
    "ann@bad-.example",
    "ann@ab--cd.example",
    "ann@exa_mple.test",
    "ann@example..test",
    "ann@.example.test",
    "ann@example",
    "ann@localhost.test",
    "ann@invalid",
    "ann@⒈.example",
    "ann@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.test",  # fullwidth letters
    "a" * 65 + "@example.test",
    "ann@" + "a" * 250 + ".test",
    "ann@" + ".".join(["a" * 63] * 4) + ".test",
    "postmaster@example.test",
    "ann@[127.0.0.1]",
]


def _outcome(validate: object, address: str) -> object:
    try:
        result = validate(  # type: ignore[operator]
            address,
            check_deliverability=False,
            test_environment=True,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            strict=True,
        )
    except email_validator.EmailNotValidError as exc:
        return (type(exc), str(exc))
    return result.__dict__


@pytest.mark.parametrize("address", TRICKY)
def test_the_cached_domain_check_answers_as_email_validator_does(address: str) -> None:
    """Validating with the domain check memoised gives the library's own answer."""
    for _ in range(2):  # the second time from the cache
        assert _outcome(addresses._validate_email, address) == _outcome(
            email_validator.validate_email, address
        )


@settings(max_examples=200, deadline=None)
@given(
    local=st.from_regex(r"[a-zA-Z0-9._%+ë-]{1,70}", fullmatch=True),
    domain=st.from_regex(r"[a-zA-Z0-9ü.-]{1,30}", fullmatch=True),
)
def test_any_address_gets_the_libraries_answer(local: str, domain: str) -> None:
    """Random addresses: the same result or the same reason, cached or not."""
    address = f"{local}@{domain}"
    assert _outcome(addresses._validate_email, address) == _outcome(
        email_validator.validate_email, address
    )


def test_a_batch_checks_each_domain_once() -> None:
    """A thousand addresses in one domain run the domain check once."""
    check = addresses._validate_email.__globals__["validate_email_domain_name"]
    check.cache_clear()
    for n in range(1000):
        Address.create(f"user{n}@once-per-domain.example", field="to")
    assert check.cache_info().misses == 1
