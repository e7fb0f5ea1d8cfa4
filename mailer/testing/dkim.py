"""Check DKIM signatures in tests, against a given public key, without DNS."""

from __future__ import annotations

import base64
import re

from mailer.content.dkim import KeyKind, generate_key, require
from mailer.content.message import Envelope
from mailer.records import DKIMSignatureInfo, SentMail

# What receivers accept today (RFC 8301, RFC 8463).
ACCEPTED_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
_PEM_BODY = re.compile(
    rb"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", re.S
)


def make_dkim_key(kind: KeyKind = "ed25519", *, bits: int = 2048) -> tuple[str, str]:
    """Return a new private key (PEM) and the DNS TXT record value publishing it.

    Handy with ``MAILER_DKIM_PRIVATE_KEY`` in a test::

        private_pem, record = make_dkim_key()
        settings = isolated_settings(dkim_domain="example.test",
                                     dkim_selector="test",
                                     dkim_private_key=private_pem)
    """
    key = generate_key(kind, bits=bits)
    return key.private_pem().decode("ascii"), key.public_record()


def dkim_record(public_key: str | bytes) -> bytes:
    """Return a DKIM TXT record value for a PEM public key or a record value.

    Args:
        public_key: ``"v=DKIM1; k=rsa; p=..."`` as published in DNS, or a PEM
            ``PUBLIC KEY`` (RSA or Ed25519).
    """
    data = public_key.encode("ascii") if isinstance(public_key, str) else public_key
    match = _PEM_BODY.search(data)
    if match is None:
        return data.strip()
    serialization = require("cryptography.hazmat.primitives.serialization")
    ed25519 = require("cryptography.hazmat.primitives.asymmetric.ed25519")
    key = serialization.load_pem_public_key(data)
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    return b"v=DKIM1; k=rsa; p=" + b"".join(match.group(1).split())


def verify_dkim(mail: SentMail | bytes, public_key: str | bytes) -> DKIMSignatureInfo:
    """Assert that the message's first DKIM signature verifies with ``public_key``.

    The key is given, not looked up in DNS, so a test can check a signing
    set-up before its record is published::

        info = verify_dkim(outbox.last, record)
        assert info.domain == "example.com"

    Args:
        mail: A received message, or its raw bytes as the server got them.
        public_key: The TXT record value (``"v=DKIM1; k=ed25519; p=..."``) or a
            PEM public key.

    Returns:
        What the signature says (domain, selector, algorithm, signed headers).

    Raises:
        AssertionError: There is no signature, it uses an algorithm receivers
            refuse (rsa-sha1), or it does not verify (the message says why,
            as dkimpy reports it).
    """
    dkim = require("dkim")
    sent = mail if isinstance(mail, SentMail) else None
    raw = mail.raw if isinstance(mail, SentMail) else bytes(mail)
    info = (sent or SentMail(envelope=Envelope("", ()), raw=raw)).dkim
    if info is None:
        raise AssertionError("the message has no DKIM-Signature header")
    if info.algorithm not in ACCEPTED_ALGORITHMS:
        # dkimpy still verifies rsa-sha1; receivers must not (RFC 8301 3.1),
        # so such a signature passing here would give false confidence.
        raise AssertionError(
            f"DKIM signature uses a={info.algorithm}, which receivers treat as "
            f"no signature (RFC 8301); sign with {' or '.join(ACCEPTED_ALGORITHMS)}"
        )
    record = dkim_record(public_key)

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return record

    verifier = dkim.DKIM(raw)
    try:
        verified = verifier.verify(dnsfunc=lookup)
    except dkim.DKIMException as exc:
        raise AssertionError(f"DKIM signature does not verify: {exc}") from None
    if not verified:
        raise AssertionError(
            "DKIM signature does not verify with the given key (the message "
            "changed after signing, or another key signed it)"
        )
    return info
