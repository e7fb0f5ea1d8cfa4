"""Build the DKIM signer the settings describe, once per key, checked at start-up."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING

from mailer.content.addresses import Address
from mailer.exceptions import ConfigError

if TYPE_CHECKING:
    from mailer.config.settings import MailerSettings
    from mailer.content.dkim import DKIMSigner

logger = logging.getLogger("mailer")
# Longer values are not echoed in an error (PATH_MAX is 4096, but a key file's
# path is short; a long value is more likely pasted key material).
MAX_SHOWN_PATH = 512


def dkim_signer(settings: MailerSettings) -> DKIMSigner | None:
    """Return the signer for the ``MAILER_DKIM_*`` settings, or None when unset.

    Raises:
        ConfigError: The key cannot be read or parsed, or is too weak (the
            error names the setting, never the key).
    """
    domain, selector = settings.dkim_domain, settings.dkim_selector
    if domain is None or selector is None:
        return None
    if settings.dkim_private_key is not None:
        key_name = "MAILER_DKIM_PRIVATE_KEY"
        pem = settings.dkim_private_key.get_secret_value().encode("utf-8")
        # .env files hold one line: allow "\n" escapes for the PEM's line ends.
        pem = pem.replace(b"\\n", b"\n")
    else:
        key_name = "MAILER_DKIM_PRIVATE_KEY_FILE"
        path = settings.dkim_private_key_file
        if path is None:
            raise ConfigError(
                "MAILER_DKIM_PRIVATE_KEY_FILE: required with MAILER_DKIM_DOMAIN "
                "(or set MAILER_DKIM_PRIVATE_KEY)",
                key=key_name,
            )
        try:
            pem = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or "error"
            if not looks_like_a_path(str(path)):
                # The key itself, pasted where its file's path goes: never echo it.
                raise ConfigError(
                    f"{key_name}: cannot read the file it names ({reason}), and "
                    "the value does not look like a file path; give the path of "
                    "the PEM file here, or the key itself in "
                    "MAILER_DKIM_PRIVATE_KEY",
                    key=key_name,
                ) from None
            raise ConfigError(
                f"{key_name}: cannot read {path}: {reason}", key=key_name
            ) from None
    return _signer(domain, selector, pem, key_name)


def looks_like_a_path(value: str) -> bool:
    """Return whether ``value`` may be shown as a file path (it cannot be a key).

    A PEM key holds "-----" and line breaks; a base64 key body has no dot, where
    a key file's name has an extension (``.pem``, ``.key``).
    """
    name = value.rstrip("/").rpartition("/")[2]
    return (
        "-----" not in value
        and not any(char.isspace() for char in value)
        and "." in name
        and len(value) <= MAX_SHOWN_PATH
    )


@lru_cache(maxsize=8)
def _signer(domain: str, selector: str, pem: bytes, key_name: str) -> DKIMSigner:
    from mailer.content.dkim import RECOMMENDED_RSA_BITS, DKIMSigner, load_key

    key = load_key(pem, key=key_name)
    if key.kind == "rsa" and key.bits < RECOMMENDED_RSA_BITS:
        logger.warning(
            "%s: a %d-bit RSA key is weak; use %d bits (mailer dkim keygen)",
            key_name,
            key.bits,
            RECOMMENDED_RSA_BITS,
        )
    return DKIMSigner(domain, selector, key)


def check_alignment(signer: DKIMSigner, sender: Address, *, field: str) -> None:
    """Raise unless the From domain aligns with the signing domain (for DMARC).

    Raises:
        ConfigError: ``d=`` is neither the From domain nor a parent of it.
    """
    from mailer.content.dkim import is_aligned

    domain = sender.envelope.rpartition("@")[2]
    if not is_aligned(domain, signer.domain):
        raise ConfigError(
            f"MAILER_DKIM_DOMAIN: {signer.domain!r} does not align with the "
            f"{field} domain {domain!r}; DMARC would fail: sign with "
            f"MAILER_DKIM_DOMAIN={domain} (or a parent domain of it)",
            key="MAILER_DKIM_DOMAIN",
        )
