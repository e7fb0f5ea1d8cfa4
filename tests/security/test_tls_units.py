"""The TLS policy's pieces without a network: contexts, explanations, pins, settings."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from mailer import ConfigError, MailerSettings
from mailer.config.settings import parse_fingerprints
from mailer.transports.smtp.errors import describe_tls_failure
from mailer.transports.smtp.tls import (
    TLSPolicy,
    build_client_context,
    certificate_fingerprint,
    explain_certificate_failure,
)


def test_the_default_context_verifies_chain_and_host_with_tls_1_2_at_least() -> None:
    """Default: CERT_REQUIRED, host name checked, TLS 1.2 minimum."""
    context = build_client_context(verify=True, ca_file=None, min_version="1.2")
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_min_version_1_3_and_skip_verify_are_applied() -> None:
    """MIN_VERSION=1.3 and INSECURE_SKIP_VERIFY change exactly those two things."""
    context = build_client_context(verify=False, ca_file=None, min_version="1.3")
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.verify_mode is ssl.CERT_NONE
    assert context.check_hostname is False


def test_a_ca_file_is_the_only_trust(ca_file: Path, ca: trustme.CA) -> None:
    """With MAILER_SMTP_CA_FILE the context trusts that CA and nothing else."""
    context = build_client_context(verify=True, ca_file=ca_file, min_version="1.2")
    certificates = context.get_ca_certs(binary_form=True)
    expected = ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode())
    assert certificates == [expected]


def test_the_policy_follows_the_settings(
    ca_file: Path, make_settings: Callable[..., MailerSettings]
) -> None:
    """TLSPolicy.from_settings reads mode, verification, CA, version and pins."""
    policy = TLSPolicy.from_settings(
        make_settings(
            smtp_host="smtp.example.com",
            smtp_tls="tls",
            smtp_ca_file=ca_file,
            smtp_insecure_skip_verify=True,
            smtp_tls_min_version="1.3",
            smtp_tls_fingerprint="AB" * 32,
        )
    )
    assert policy == TLSPolicy(
        mode="tls",
        verify=False,
        ca_file=ca_file,
        min_version="1.3",
        fingerprints=frozenset({"ab" * 32}),
    )


@pytest.mark.parametrize(
    ("code", "openssl", "says"),
    [
        (10, "certificate has expired", "the certificate has expired"),
        (9, "certificate is not yet valid", "the certificate is not valid yet"),
        (18, "self-signed certificate", "the certificate is self-signed"),
        (20, "unable to get local issuer certificate", "issuer is not a trusted"),
        (62, "Hostname mismatch, certificate is not valid for 'x'.", "(wrong host)"),
        (
            64,
            "IP address mismatch, certificate is not valid for '1.2.3.4'.",
            "(wrong host)",
        ),
        (99, "some new OpenSSL reason", "some new OpenSSL reason"),
    ],
)
def test_each_verification_failure_is_named(code: int, openssl: str, says: str) -> None:
    """OpenSSL's verify code becomes words, with OpenSSL's own text kept."""
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = code
    error.verify_message = openssl
    text = explain_certificate_failure(error)
    assert says in text
    assert openssl in text
    described = describe_tls_failure(error, "smtp.example.com:587")
    assert described.startswith(
        "TLS with smtp.example.com:587 failed: certificate not trusted: "
    )


def test_a_self_signed_failure_says_how_to_trust_it() -> None:
    """The self-signed message points to the CA file and pinning settings."""
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = 18
    error.verify_message = "self-signed certificate"
    text = explain_certificate_failure(error)
    assert "MAILER_SMTP_CA_FILE" in text
    assert "MAILER_SMTP_TLS_FINGERPRINT" in text


def test_fingerprints_are_sha256_in_colon_hex() -> None:
    """certificate_fingerprint() is the SHA-256 of the DER bytes, upper case, colon separated."""
    digest = hashlib.sha256(b"der").hexdigest().upper()
    assert certificate_fingerprint(b"der").replace(":", "") == digest
    assert len(certificate_fingerprint(b"der")) == 64 + 31


@pytest.mark.parametrize(
    "value",
    [
        "AB" * 32,
        ":".join(["ab"] * 32),
        "sha256:" + "Ab" * 32,
        " " + "ab" * 32 + " ",
    ],
)
def test_pins_are_read_in_the_usual_spellings(value: str) -> None:
    """Upper or lower case, colons, a sha256: prefix and spaces are all accepted."""
    assert parse_fingerprints(value) == frozenset({"ab" * 32})


def test_several_pins_allow_a_rotation() -> None:
    """A comma-separated list pins each certificate."""
    assert parse_fingerprints(f"{'aa' * 32},{'bb' * 32}") == {"aa" * 32, "bb" * 32}


@pytest.mark.parametrize(
    "value", ["", "ab" * 31, "zz" * 32, "ab" * 32 + ",", "md5:" + "ab" * 16]
)
def test_malformed_pins_are_refused(
    value: str, make_settings: Callable[..., MailerSettings]
) -> None:
    """Anything but 64 hex digits per entry is a ConfigError naming the key."""
    with pytest.raises(ConfigError) as caught:
        make_settings(smtp_host="smtp.example.com", smtp_tls_fingerprint=value)
    assert caught.value.key == "MAILER_SMTP_TLS_FINGERPRINT"


def test_opportunistic_is_a_mode_and_defaults_to_port_25(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """MAILER_SMTP_TLS=opportunistic is accepted (port 25 unless set)."""
    settings = make_settings(smtp_host="relay.example.com", smtp_tls="opportunistic")
    assert (settings.tls_mode, settings.port) == ("opportunistic", 25)


def test_the_default_off_loopback_is_still_required_starttls(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """No MAILER_SMTP_TLS and a remote host: starttls (required), port 587."""
    settings = make_settings(smtp_host="smtp.example.com")
    assert (settings.tls_mode, settings.port) == ("starttls", 587)
    assert settings.smtp_insecure_skip_verify is False
    assert settings.smtp_tls_min_version == "1.2"
    assert (settings.max_recipients, settings.max_message_size) == (100, 26_214_400)


def test_plaintext_to_a_remote_host_needs_the_loud_setting(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """tls=none off loopback: refused, the message names MAILER_SMTP_INSECURE_PLAINTEXT."""
    with pytest.raises(
        ConfigError, match="MAILER_SMTP_INSECURE_PLAINTEXT=true"
    ) as caught:
        make_settings(smtp_host="relay.internal", smtp_tls="none")
    assert caught.value.key == "MAILER_SMTP_TLS"
    allowed = make_settings(
        smtp_host="relay.internal", smtp_tls="none", smtp_insecure_plaintext=True
    )
    assert allowed.tls_mode == "none"
