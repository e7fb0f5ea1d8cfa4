"""DKIM: settings checked at start-up, signing once, alignment, keys never shown."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer import Address, ConfigError, MailerSettings, Message, MessageClient
from mailer.content.dkim import DKIMSigner, generate_key, load_key
from mailer.records import SentMail
from mailer.testing import make_dkim_key, verify_dkim
from mailer.testing.fakes import MemoryTransport

ED_PEM, ED_RECORD = make_dkim_key("ed25519")
SENDER = Address.parse("news@example.test", field="sender")
# cryptography refuses to make keys under 1024 bits; made once with
# `openssl genrsa 768`, a throwaway test key.
WEAK_768_BIT_KEY = """-----BEGIN RSA PRIVATE KEY-----
MIIBywIBAAJhAKby1KwuU5U0zOxeV3hLEobZ/SOFx7kqzWu1hFlhj+f2Mzuqnldt
kspY8QbyKBRM7rnRuGWOnCa4LYrO2N+kPrdzoV7Pd9h0/LGr3fOd9RoeY2FLC9Tq
uuEwXBnczGgNswIDAQABAmEAn6kUIyaa4NMCN/txg6WoLjdDlDlY7Ik2s4+A50oa
qigWjzV5APvVqpasy4vDMMbw7GLLPp0MT4CUtDcQ4/wy/Tm3Op/cznvVVPRtKm8K
MheNfDoePw9ox1YFvjE8p6sBAjEA0iZf5YQI5bfTQ+xXzqMLuSI4yINQ6/uaBTlr
iJf3YabCBnju7mr3br+f9/ZhDTThAjEAy1+Bmc4c2ajxjA+PUSjW378qUlXLNYCb
iv76Shn8eWlvLoOEXTREKbEzQHj+AEETAjAqnZGQz4emXfK/sWvVAYddEa2GK+r7
D9iZ+pzt5DNMYC60dU2ul455rO5ZsGLZ9MECMBc3ArtE3OQ3tcLwL8Lq74RA9RrK
8lRcJuU57+YvizNsxqU/nAdrpPBBawFMDmqHAwIxALJlTNgvMSTLWu1F1I1GX+6y
9DOadAH8pH3f9VYL66BDjP/Nr/Pwzj3Y9kVEfM/FuQ==
-----END RSA PRIVATE KEY-----
"""


def rsa_pem(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def dkim_settings(
    make_settings: Callable[..., MailerSettings],
) -> Callable[..., MailerSettings]:
    def make(**overrides: object) -> MailerSettings:
        values: dict[str, object] = {
            "from_": "Shop <news@shop.example.test>",
            "dkim_domain": "shop.example.test",
            "dkim_selector": "s1",
            "dkim_private_key": ED_PEM,
        }
        values.update(overrides)
        return make_settings(**values)

    return make


async def test_every_message_is_signed_once_and_verifies(
    dkim_settings: Callable[..., MailerSettings],
) -> None:
    """With the keys set, the client signs; the bytes handed over carry one signature."""
    transport = MemoryTransport()
    async with MessageClient(dkim_settings(), transport=transport) as client:
        await client.send(Message(to="a@example.test", subject="s", body="b"))
    [mail] = transport.outbox
    assert mail.raw.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    assert mail.raw.count(b"DKIM-Signature:") == 1
    assert mail.dkim is not None
    assert (mail.dkim.domain, mail.dkim.selector) == ("shop.example.test", "s1")
    verify_dkim(mail, ED_RECORD)


def test_a_key_file_works_like_the_key_itself(
    dkim_settings: Callable[..., MailerSettings], tmp_path: Path
) -> None:
    """MAILER_DKIM_PRIVATE_KEY_FILE is read at start-up; PEM with \\n escapes works too."""
    path = tmp_path / "k.pem"
    path.write_text(ED_PEM)
    assert dkim_settings(dkim_private_key=None, dkim_private_key_file=path)
    assert dkim_settings(dkim_private_key=ED_PEM.replace("\n", "\\n"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {
                "dkim_private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
            },
            r"^MAILER_DKIM_PRIVATE_KEY: not an unencrypted PEM private key \(RSA or Ed25519\); make one with: mailer dkim keygen$",
        ),
        (
            {"dkim_private_key": WEAK_768_BIT_KEY},
            r"^MAILER_DKIM_PRIVATE_KEY: a 768-bit RSA key is refused",
        ),
        (
            {"dkim_selector": None},
            r"^MAILER_DKIM_SELECTOR: required when MAILER_DKIM_DOMAIN is set",
        ),
        (
            {"dkim_private_key": None},
            r"^MAILER_DKIM_PRIVATE_KEY_FILE: required with MAILER_DKIM_DOMAIN",
        ),
        (
            {"dkim_private_key_file": Path("k.pem")},
            r"^MAILER_DKIM_PRIVATE_KEY: set either it or MAILER_DKIM_PRIVATE_KEY_FILE",
        ),
        (
            {"dkim_domain": "other.example.test"},
            r"^MAILER_DKIM_DOMAIN: 'other.example.test' does not align with the MAILER_FROM domain 'shop.example.test'",
        ),
        ({"dkim_domain": "bad domain"}, r"^MAILER_DKIM_DOMAIN: not a domain name"),
    ],
)
def test_bad_dkim_settings_are_one_line_errors_naming_the_keys(
    dkim_settings: Callable[..., MailerSettings],
    overrides: dict[str, object],
    message: str,
) -> None:
    """Each DKIM mistake is a ConfigError at start-up naming the key; the key is never quoted."""
    with pytest.raises(ConfigError, match=message) as caught:
        dkim_settings(**overrides)
    text = str(caught.value)
    assert "\n" not in text
    assert "BEGIN" not in text
    assert "MII" not in text
    assert ED_PEM[40:60] not in text


def test_a_missing_key_file_names_the_setting(
    dkim_settings: Callable[..., MailerSettings], tmp_path: Path
) -> None:
    """An unreadable key file is a configuration error naming MAILER_DKIM_PRIVATE_KEY_FILE."""
    with pytest.raises(
        ConfigError, match=r"^MAILER_DKIM_PRIVATE_KEY_FILE: cannot read .*gone\.pem"
    ):
        dkim_settings(
            dkim_private_key=None, dkim_private_key_file=tmp_path / "gone.pem"
        )


def test_a_parent_domain_aligns(dkim_settings: Callable[..., MailerSettings]) -> None:
    """d=example.test signs for news@shop.example.test (relaxed alignment)."""
    assert dkim_settings(dkim_domain="example.test").dkim_domain == "example.test"


async def test_a_message_sender_that_does_not_align_is_refused(
    dkim_settings: Callable[..., MailerSettings],
) -> None:
    """A per-message sender outside d= is refused before sending, naming the key."""
    transport = MemoryTransport()
    async with MessageClient(dkim_settings(), transport=transport) as client:
        result = (
            await client.send_many(
                [
                    Message(
                        to="a@example.test",
                        subject="s",
                        body="b",
                        sender="x@elsewhere.test",
                    )
                ]
            )
        )[0]
    assert result.error is not None
    assert result.error.startswith(
        "MAILER_DKIM_DOMAIN: 'shop.example.test' does not align with the sender domain 'elsewhere.test'"
    )
    assert transport.outbox == []


def test_a_1024_bit_key_warns(
    dkim_settings: Callable[..., MailerSettings], caplog: pytest.LogCaptureFixture
) -> None:
    """RSA under 2048 bits is accepted with a warning that says what to use."""
    with caplog.at_level(logging.WARNING, logger="mailer"):
        dkim_settings(dkim_private_key=rsa_pem(1024))
    assert "a 1024-bit RSA key is weak; use 2048 bits" in caplog.text


def test_settings_repr_hides_the_key(
    dkim_settings: Callable[..., MailerSettings],
) -> None:
    """The key is a secret: repr and model_dump show no part of it."""
    settings = dkim_settings()
    assert ED_PEM[40:60] not in repr(settings)
    assert ED_PEM[40:60] not in str(settings.model_dump())
    signer = DKIMSigner("shop.example.test", "s1", load_key(ED_PEM.encode(), key="k"))
    assert ED_PEM[40:60] not in repr(signer)
    assert repr(signer.key) == "DKIMKey(ed25519, 256 bits)"


def test_signature_has_no_timestamp_and_is_deterministic() -> None:
    """No t= tag: the same bytes always get the same signature (resumes rely on it)."""
    signer = DKIMSigner("example.test", "s", generate_key("rsa", bits=2048))
    raw = Message(to="a@example.test", subject="s", body="b").to_bytes(
        SENDER, message_id="<1@example.test>", date="Mon, 07 Dec 2026 10:00:00 +0000"
    )
    first, second = signer.sign(raw), signer.sign(raw)
    assert first == second
    assert b" t=" not in first
    assert b";t=" not in first


def test_the_signed_header_list_over_signs_from_and_includes_unsubscribe() -> None:
    """h= lists From twice and the List-Unsubscribe pair when present."""
    signer = DKIMSigner("example.test", "s", generate_key("ed25519"))
    message = Message(
        to="a@example.test", subject="s", body="b", unsubscribe="https://example.test/u"
    )
    mail = SentMail(
        envelope=message.envelope(SENDER), raw=signer.sign(message.to_bytes(SENDER))
    )
    assert mail.dkim is not None
    assert mail.dkim.signed_headers == (
        "from",
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "list-unsubscribe",
        "list-unsubscribe-post",
    )
