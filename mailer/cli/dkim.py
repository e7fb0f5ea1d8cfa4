"""Run ``mailer dkim keygen``: write a DKIM key pair and print the DNS record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from mailer.cli.common import fail
from mailer.content.dkim import DKIMKey, generate_key
from mailer.exceptions import MailerError

# RFC 1035 3.3.14: one TXT character-string holds at most 255 octets.
TXT_STRING_LIMIT = 255

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="DKIM keys: make a key pair and the DNS record to publish.",
)


@app.command()
def keygen(
    selector: Annotated[
        str, typer.Option("--selector", "-s", help="Selector, e.g. mail2026.")
    ],
    domain: Annotated[str, typer.Option("--domain", "-d", help="Signing domain (d=).")],
    algorithm: Annotated[
        Literal["rsa", "ed25519"],
        typer.Option("--algorithm", help="rsa (understood everywhere) or ed25519."),
    ] = "rsa",
    bits: Annotated[int, typer.Option("--bits", help="RSA key size.")] = 2048,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Private key file; default SELECTOR.DOMAIN.pem."),
    ] = None,
) -> None:
    """Write a new private key; print its TXT record (SELECTOR._domainkey.DOMAIN)."""
    from mailer.config.settings import MailerSettings

    checks = (
        ("--selector", selector, MailerSettings._dkim_selector_is_label),
        ("--domain", domain, MailerSettings._dkim_domain_is_host),
    )
    for option, value, check in checks:
        try:
            # The same rules as MAILER_DKIM_SELECTOR / MAILER_DKIM_DOMAIN.
            check(value)
        except ValueError as exc:
            raise fail(f"{option}: {exc}") from None
    path = out if out is not None else Path(f"{selector}.{domain}.pem")
    if path.exists():
        raise fail(f"--out: {path} exists; refusing to overwrite a key")
    try:
        key = generate_key(algorithm, bits=bits)
    except MailerError as exc:
        raise fail(str(exc)) from None
    _write_private(path, key)
    print(f"wrote the private key to {path} (keep it secret; mode 600)")
    print()
    print("publish this DNS TXT record:")
    print(f"{selector}._domainkey.{domain}. IN TXT {zone_strings(key.public_record())}")
    print()
    print("the record's value, for a DNS provider's web form:")
    print(key.public_record())
    print()
    print("then set:")
    print(f"MAILER_DKIM_DOMAIN={domain}")
    print(f"MAILER_DKIM_SELECTOR={selector}")
    print(f"MAILER_DKIM_PRIVATE_KEY_FILE={path}")


def zone_strings(value: str) -> str:
    """Return ``value`` as zone-file TXT strings of at most 255 characters each."""
    pieces = [
        value[start : start + TXT_STRING_LIMIT]
        for start in range(0, len(value), TXT_STRING_LIMIT)
    ]
    return " ".join(f'"{piece}"' for piece in pieces)


def _write_private(path: Path, key: DKIMKey) -> None:
    try:
        # Created with mode 600 from the start: never readable by others.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise fail(f"--out: cannot create {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_pem())
