"""The fast path of address validation: email-validator's answer, without calling it."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.content import addresses
from mailer.exceptions import MessageError

LOCAL_PARTS = [
    "a",
    "ann",
    "Ann.Example",
    "ANN",
    "user+tag",
    "o'brien",
    "a!#$%&'*+-/=?^_`{|}~z",
    "a.b.c",
    "a..b",
    ".a",
    "a.",
    ".",
    "",
    "x" * 63,
    "x" * 64,
    "x" * 65,
    "x." * 31 + "yz",
    "Postmaster",
    "ABUSE",
    "info",
    "support.team",
    "zoë",
    "ñ",
    '"quoted"',
    '"a b"',
    '"a..b"',
    "a b",
    "a<b",
    "a>b",
    "a\\b",
    "a(b)",
    "a[b]",
    "a,b",
    "a:b",
    "a\u0301",
    "\u0301a",
]

DOMAINS = [
    "example.com",
    "EXAMPLE.COM",
    "Example.Test",
    "example.test",
    "test",
    "TEST",
    "x.test",
    "localhost",
    "LOCALHOST",
    "a.localhost",
    "localhost.example",
    "example",
    "x.invalid",
    "invalid",
    "x.local",
    "x.onion",
    "x.arpa",
    "1.2.3.4",
    "example.123",
    "example.c0m",
    "example.co1",
    "123.example",
    "ex-ample.com",
    "ex--ample.com",
    "-ex.com",
    "ex-.com",
    "ex.-com",
    "ex.com-",
    "ex..com",
    ".ex.com",
    "ex.com.",
    ".",
    "-",
    "xn--bcher-kva.ch",
    "XN--BCHER-KVA.CH",
    "xn--zz.com",
    "xn--.com",
    "ab--cd.com",
    "xn--ls8h.la",
    "bücher.de",
    "BÜCHER.de",
    "ex_ample.com",
    "ex ample.com",
    "[127.0.0.1]",
    "[IPv6:::1]",
    "a" * 63 + ".com",
    "a" * 64 + ".com",
    ".".join(["a" * 63] * 3) + ".abcdefghijklmnopqrstuvwxyz",
    ".".join(["a" * 63] * 3) + ".abcdefghijklmnopqrstuvwxyz1",
    ".".join(["b" * 61] * 4) + ".test",
    ".".join(["c" * 40] * 5) + ".example",
    # With a 64-octet local part: 254 octets in all, then 255.
    "c" * 63 + "." + "c" * 63 + "." + "c" * 61,
    "c" * 63 + "." + "c" * 63 + "." + "c" * 62,
    # Longer in UTF-8 once the Punycode labels are decoded (CJK).
    "xn--fiqaaaaaaaaaaaaaaaa." * 3 + "test",
    "xn--fiqaaaaaaaaaaaaaaaa." * 4 + "test",
    "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.test",
    "⒈.example",
]


def _outcome(addr: str, *, fast: bool, monkeypatch: pytest.MonkeyPatch) -> object:
    """Return the Address made of ``addr``, or the error's class and text."""
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(addresses, "_checked_fast", lambda local, domain: None)
        try:
            return addresses._validated(addr, "", "to")
        except MessageError as exc:
            return (type(exc), str(exc))


def _generated(count: int) -> list[str]:
    """Return ``count`` random addresses built from the pieces of both lists."""
    rng = random.Random(14)  # noqa: S311 - a repeatable test set, not a secret
    alphabet = "aZ09.-_+'\"@ ëü\u0301"
    found = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.4:
            local = "".join(rng.choice(alphabet[:8]) for _ in range(rng.randint(0, 70)))
            labels = [
                "".join(rng.choice("aZ09-") for _ in range(rng.randint(0, 64)))
                for _ in range(rng.randint(1, 5))
            ]
            domain = ".".join(labels)
        elif kind < 0.8:
            local = rng.choice(LOCAL_PARTS)
            domain = rng.choice(DOMAINS)
            if rng.random() < 0.5:
                domain = "".join(c.upper() if rng.random() < 0.3 else c for c in domain)
        else:
            local = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            domain = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        found.append(f"{local}@{domain}")
    return found


CASES = [
    f"{local}@{domain}" for local, domain in itertools.product(LOCAL_PARTS, DOMAINS)
] + ["ann", "@example.com", "ann@", "a@b@example.com"]


def test_the_fast_path_gives_the_librarys_answer_for_every_listed_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every edge case: the same Address, or the same refusal with the same reason."""
    fast_hits = 0
    for addr in CASES + _generated(8000):
        expected = _outcome(addr, fast=False, monkeypatch=monkeypatch)
        assert _outcome(addr, fast=True, monkeypatch=monkeypatch) == expected, addr
        local, at, domain = addr.rpartition("@")
        domain = addresses._LOCALHOST.sub(r"\1test", domain)
        if at and addresses._checked_fast(local, domain) is not None:
            fast_hits += 1
            # Only what the library accepts takes the fast path.
            assert isinstance(expected, addresses.Address), addr
    # The fast path is taken, not a dead branch that the comparison cannot see.
    assert fast_hits > 500


@pytest.mark.parametrize(
    ("addr", "envelope"),
    [
        ("Ann@Example.COM", "Ann@example.com"),
        ("Postmaster@Example.test", "postmaster@example.test"),
        ("ann@LocalHost", "ann@localhost"),
        ("ann@XN--BCHER-KVA.example", "ann@xn--bcher-kva.example"),
        ("x" * 64 + "@example.test", "x" * 64 + "@example.test"),
    ],
)
def test_the_common_addresses_take_the_fast_path(addr: str, envelope: str) -> None:
    """Plain ASCII addresses are answered without calling validate_email."""
    local, _, domain = addr.rpartition("@")
    domain = addresses._LOCALHOST.sub(r"\1test", domain)
    assert addresses._checked_fast(local, domain) is not None
    assert addresses._validated(addr, "", "to").envelope == envelope


@pytest.mark.parametrize(
    "addr",
    [
        "x" * 65 + "@example.test",
        "a..b@example.test",
        "ann@example..test",
        "ann@-example.test",
        "ann@example.123",
        "ann@x.invalid",
        "ann@" + ".".join(["b" * 61] * 4) + ".test",
        "x" * 64 + "@" + ".".join(["c" * 40] * 5) + ".example",
        "zoë@example.test",
        "ann@bücher.example",
    ],
)
def test_anything_else_is_left_to_the_library(addr: str) -> None:
    """Invalid or non-ASCII addresses get no answer from the fast path."""
    local, _, domain = addr.rpartition("@")
    assert addresses._checked_fast(local, domain) is None


@settings(max_examples=300, deadline=None)
@given(
    local=st.from_regex(r"[a-zA-Z0-9._%+'!-]{0,70}", fullmatch=True),
    domain=st.from_regex(r"[a-zA-Z0-9.-]{0,80}", fullmatch=True),
)
def test_random_plain_addresses_get_the_same_answer_either_way(
    local: str, domain: str
) -> None:
    """Random ASCII addresses: the fast path agrees with the library or abstains."""
    fast = addresses._checked_fast(local, domain)
    if fast is None:
        return
    assert addresses._checked(f"{local}@{domain}", "to") == fast


@pytest.mark.parametrize(
    ("addr", "envelope"),
    [
        ("dev@localhost", "dev@localhost"),
        ("dev@LocalHost", "dev@localhost"),
        ("dev@localhost.", "dev@localhost."),
        ("dev@Mail.LOCALHOST", "dev@mail.localhost"),
        ("dev@a.b.localhost.", "dev@a.b.localhost."),
    ],
)
def test_localhost_names_are_accepted_in_any_case(addr: str, envelope: str) -> None:
    """localhost and *.localhost (a final dot too) are sendable, lower-cased."""
    assert addresses._validated(addr, "", "to").envelope == envelope


@pytest.mark.parametrize(
    "addr",
    [
        "dev@notlocalhost",
        "dev@localhost.example.invalid",
        "dev@localhostx",
        "dev@x-localhost",
    ],
)
def test_names_merely_containing_localhost_are_not_rewritten(addr: str) -> None:
    """Only the label localhost at the end is special; lookalikes get the library's answer."""
    with pytest.raises(MessageError, match="invalid address"):
        addresses._validated(addr, "", "to")
