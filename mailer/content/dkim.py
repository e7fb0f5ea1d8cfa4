"""Sign messages with DKIM (RFC 6376; Ed25519 per RFC 8463) using dkimpy.

dkimpy parses the message, canonicalises headers and body (relaxed/relaxed)
and hashes them; the private-key operation runs in OpenSSL (``cryptography``),
because dkimpy's pure-Python RSA costs ~7 ms a message at 2048 bits.

The signature has no ``t=`` (timestamp) tag, which RFC 6376 makes optional:
the signature is then a function of the message bytes alone, so a resumed
batch that rebuilds a message with the same Message-ID and Date sends the very
same signed bytes. Both algorithms' signatures are deterministic.

The libraries are an extra (``pip install 'aiomailer[dkim]'``) imported only
here, and only when a key is used.
"""

from __future__ import annotations

import base64
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from mailer.exceptions import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
KeyKind = Literal["rsa", "ed25519"]
MIN_RSA_BITS = 1024
RECOMMENDED_RSA_BITS = 2048
INSTALL_HINT = "pip install 'aiomailer[dkim]'"
# Signed when present (RFC 6376 5.4.1 and what Gmail's bulk-sender rules look
# at); From is listed twice ("over-signed") so that no second From can be
# added without breaking the signature.
SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "reply-to",
    "list-unsubscribe",
    "list-unsubscribe-post",
)


def require(module: str) -> ModuleType:
    """Import an optional DKIM dependency, or raise one line saying what to install.

    Raises:
        ConfigError: The ``dkim`` extra is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"DKIM signing needs the dkim extra: {INSTALL_HINT}",
            key="MAILER_DKIM_DOMAIN",
        ) from None


@dataclass(frozen=True, slots=True, repr=False)
class DKIMKey:
    """A private DKIM key: its kind and size, never shown in a repr or an error.

    Attributes:
        kind: ``"rsa"`` or ``"ed25519"``.
        bits: The RSA modulus size (256 for Ed25519).
    """

    kind: KeyKind
    bits: int
    private: RSAPrivateKey | Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"DKIMKey({self.kind}, {self.bits} bits)"

    @property
    def algorithm(self) -> Algorithm:
        """Return the ``a=`` value this key signs with."""
        return "rsa-sha256" if self.kind == "rsa" else "ed25519-sha256"

    def public_record(self) -> str:
        """Return the DNS TXT record value publishing the public key."""
        serialization = require("cryptography.hazmat.primitives.serialization")
        public = self.private.public_key()
        if self.kind == "rsa":
            der = public.public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        else:
            # RFC 8463 3: the raw 32-byte key, not a SubjectPublicKeyInfo.
            der = public.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return f"v=DKIM1; k={self.kind}; p={base64.b64encode(der).decode('ascii')}"

    def private_pem(self) -> bytes:
        """Return the private key as PKCS#8 PEM (for writing it to a file)."""
        serialization = require("cryptography.hazmat.primitives.serialization")
        pem: bytes = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem


def load_key(pem: bytes, *, key: str) -> DKIMKey:
    """Parse a PEM private key (RSA or Ed25519; PKCS#1 or PKCS#8).

    Args:
        pem: The key file's bytes.
        key: The setting it came from, named in errors (the key never is).

    Raises:
        ConfigError: Not a PEM RSA or Ed25519 key, or RSA under 1024 bits.
    """
    serialization = require("cryptography.hazmat.primitives.serialization")
    rsa = require("cryptography.hazmat.primitives.asymmetric.rsa")
    ed25519 = require("cryptography.hazmat.primitives.asymmetric.ed25519")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # The library's message could quote the input: say only what to do.
        raise ConfigError(
            f"{key}: not an unencrypted PEM private key (RSA or Ed25519); "
            "make one with: mailer dkim keygen",
            key=key,
        ) from None
    if isinstance(private, rsa.RSAPrivateKey):
        bits = private.key_size
        if bits < MIN_RSA_BITS:
            raise ConfigError(
                f"{key}: a {bits}-bit RSA key is refused by receivers (RFC 8301); "
                f"use at least {RECOMMENDED_RSA_BITS} bits",
                key=key,
            )
        return DKIMKey("rsa", bits, private)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return DKIMKey("ed25519", 256, private)
    raise ConfigError(
        f"{key}: DKIM keys are RSA or Ed25519, not {type(private).__name__}", key=key
    )


def generate_key(kind: KeyKind = "rsa", *, bits: int = RECOMMENDED_RSA_BITS) -> DKIMKey:
    """Return a new private key (``bits`` applies to RSA only).

    Raises:
        ConfigError: RSA under 1024 bits.
    """
    if kind == "ed25519":
        ed25519 = require("cryptography.hazmat.primitives.asymmetric.ed25519")
        return DKIMKey("ed25519", 256, ed25519.Ed25519PrivateKey.generate())
    if bits < MIN_RSA_BITS:
        raise ConfigError(
            f"--bits: {bits} is too small; use at least {RECOMMENDED_RSA_BITS}",
            key="--bits",
        )
    rsa = require("cryptography.hazmat.primitives.asymmetric.rsa")
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return DKIMKey("rsa", bits, private)


class DKIMSigner:
    """Add a DKIM-Signature header to wire-ready message bytes.

    Args:
        domain: The signing domain (``d=``), aligned with the From domain.
        selector: The selector (``s=``): the public key is published at
            ``SELECTOR._domainkey.DOMAIN``.
        key: The private key.
    """

    def __init__(self, domain: str, selector: str, key: DKIMKey) -> None:
        self.domain = domain
        self.selector = selector
        self.key = key
        dkim = require("dkim")
        self._dkim: Any = dkim
        self._policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        # RSASSA-PKCS1-v1_5 over the SHA-256 digest dkimpy computed.
        padding = require("cryptography.hazmat.primitives.asymmetric.padding")
        hashes = require("cryptography.hazmat.primitives.hashes")
        utils = require("cryptography.hazmat.primitives.asymmetric.utils")
        self._rsa_options = (padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

    def __repr__(self) -> str:
        return f"DKIMSigner(d={self.domain!r}, s={self.selector!r}, {self.key!r})"

    def sign(self, content: bytes) -> bytes:
        """Return ``content`` with a DKIM-Signature header field in front.

        Raises:
            ConfigError: dkimpy refused the message (it names no secret).
        """
        return self.signature(content) + content

    def signature(self, content: bytes) -> bytes:
        """Return the DKIM-Signature header field (ending with CRLF) for ``content``."""
        dkim = self._dkim
        parsed_headers, message_body = dkim.rfc822_parse(content)
        wanted = set(SIGNED_HEADERS)
        # Only the headers that are signed are canonicalised and hashed.
        headers_to_sign = [
            (name, value)
            for name, value in parsed_headers
            if name.lower().decode("ascii", "replace") in wanted
        ]
        present = {
            name.lower().decode("ascii", "replace") for name, _ in headers_to_sign
        }
        signed = [b"from"] + [
            name.encode("ascii") for name in SIGNED_HEADERS if name in present
        ]
        policy = self._policy
        body = policy.canonicalize_body(message_body)
        hasher = dkim.HASH_ALGORITHMS[self.key.algorithm.encode("ascii")]
        body_hash = base64.b64encode(hasher(body).digest())
        fields = [
            (b"v", b"1"),
            (b"a", self.key.algorithm.encode("ascii")),
            (b"c", b"relaxed/relaxed"),
            (b"d", self.domain.encode("ascii")),
            (b"s", self.selector.encode("ascii")),
            (b"h", b" : ".join(signed)),
            (b"bh", body_hash),
            # Folded onto its own line, so that adding the value keeps the
            # white space of the tags before it (as dkimpy does).
            (b"b", b"0" * 60),
        ]
        header_name = b"DKIM-Signature"
        value = dkim.fold(
            b"; ".join(b"=".join(f) for f in fields),
            namelen=len(header_name),
            linesep=b"\r\n",
        )
        value = dkim.RE_BTAG.sub(b"\\1", value)
        digest = hasher()
        headers = policy.canonicalize_headers(headers_to_sign)
        dkim.hash_headers(
            digest, policy, headers, signed, (header_name, b" " + value), dict(fields)
        )
        fields[-1] = (b"b", base64.b64encode(self._sign_digest(digest.digest())))
        folded = dkim.fold(
            b"; ".join(b"=".join(f) for f in fields) + b"\r\n",
            namelen=len(header_name),
            linesep=b"\r\n",
        )
        signature: bytes = header_name + b": " + folded
        return signature

    def _sign_digest(self, digest: bytes) -> bytes:
        if self.key.kind == "ed25519":
            # RFC 8463 3: Ed25519 signs the SHA-256 hash of the header data.
            return bytes(self.key.private.sign(digest))  # type: ignore[call-arg]
        return bytes(self.key.private.sign(digest, *self._rsa_options))  # type: ignore[call-arg]


def is_aligned(from_domain: str, dkim_domain: str) -> bool:
    """Return whether ``d=`` aligns with the From domain (DMARC relaxed alignment).

    The From domain must be the signing domain or one of its subdomains.
    """
    sender = from_domain.lower().rstrip(".")
    signer = dkim_domain.lower().rstrip(".")
    return sender == signer or sender.endswith("." + signer)
