"""verify_dkim fails on what receivers refuse, as well as on what does not verify.

Found by attacking the test kit: an rsa-sha1 signature (which receivers must
treat as no signature, RFC 8301) passed verify_dkim, because dkimpy still
verifies it: a user testing another signer's set-up got false confidence.
"""

from __future__ import annotations

import dkim
import pytest

from mailer.testing import make_dkim_key, verify_dkim

MESSAGE = (
    b"From: Shop <shop@example.test>\r\nTo: ann@example.test\r\n"
    b"Subject: hello\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nbody\r\n"
)


def signed(algorithm: bytes) -> tuple[bytes, str]:
    """MESSAGE signed by dkimpy with ``algorithm``, and the public record."""
    pem, record = make_dkim_key("rsa")
    signature = dkim.sign(
        MESSAGE,
        b"s1",
        b"example.test",
        pem.encode(),
        signature_algorithm=algorithm,
        include_headers=[b"from", b"to", b"subject", b"date"],
    )
    return signature + MESSAGE, record


def test_an_rsa_sha1_signature_fails_verification() -> None:
    """a=rsa-sha1 verifies cryptographically but is refused, naming RFC 8301."""
    raw, record = signed(b"rsa-sha1")
    with pytest.raises(AssertionError, match="RFC 8301"):
        verify_dkim(raw, record)


def test_an_rsa_sha256_signature_by_another_signer_passes() -> None:
    """The same message signed rsa-sha256 by dkimpy verifies."""
    raw, record = signed(b"rsa-sha256")
    assert verify_dkim(raw, record).algorithm == "rsa-sha256"
