"""Parse and validate email addresses strictly, one address per value."""

from __future__ import annotations

import email.errors
import email.header
import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import email_validator
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOT_ATOM_TEXT,
    EMAIL_MAX_LENGTH,
    LOCAL_PART_MAX_LENGTH,
)

from mailer.exceptions import HeaderInjectionError, InvalidAddressError, MessageError

# C0 controls, DEL, C1 controls (NEL among them; CSI and friends drive
# terminals that show logs), and the Unicode line breaks str.splitlines()
# honours (the email package folds on those too, so they could split a header).
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Lone surrogates (from bad decoding upstream) cannot be encoded as UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

_SPACE_RUN = re.compile(r"  +")
# Characters of a bad value quoted in an error message.
EXCERPT_LENGTH = 80

# RFC 5322 specials: allowed in a display name only inside double quotes.
_NAME_SPECIALS = re.compile(r'[()<>\[\]:;@\\,"]')

# "Display Name <addr>" (the name optional, possibly quoted).
_NAME_ADDR = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>\s*$")


def _with_cached_domains(validate: Callable[..., Any]) -> Callable[..., Any]:
    """Return email-validator's ``validate_email`` with its domain check memoised.

    The domain check (IDNA, UTS-46, character classes) is most of the cost of
    validating an address, and depends on the domain alone: a batch of a
    hundred thousand rows has a handful of domains. This is the library's
    own function, run with one name in its globals bound to a cached copy of
    ``validate_email_domain_name``; the library itself is left untouched. If
    a future version no longer looks the check up by that name, nothing is
    cached and every answer stays the library's.
    """
    check = validate.__globals__.get("validate_email_domain_name")
    if check is None:
        return validate
    copy = types.FunctionType(
        validate.__code__,
        {**validate.__globals__, "validate_email_domain_name": lru_cache(4096)(check)},
        validate.__name__,
        validate.__defaults__,
        validate.__closure__,
    )
    copy.__kwdefaults__ = validate.__kwdefaults__
    return copy


_validate_email = _with_cached_domains(email_validator.validate_email)
# The memoised domain check inside it, shared by the fast path below (None if
# the library no longer looks it up by that name: then there is no fast path).
_check_domain: Callable[..., Any] | None = (
    _validate_email.__globals__.get("validate_email_domain_name")
    if _validate_email is not email_validator.validate_email
    else None
)
# An ASCII domain of letters, digits, hyphens and dots: the library's domain
# check decides whether it is valid (hyphen and dot placement, labels, TLD,
# special-use names), as it would inside validate_email.
_LDH_DOMAIN = re.compile(r"[A-Za-z0-9.-]+")
# RFC 2142 role names, which the library lower-cases ("Postmaster@" and friends).
_ROLE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)

# email-validator refuses the special-use names "localhost" and "*.localhost";
# users send to them in development, so we validate them as "*.test" instead.
_LOCALHOST = re.compile(r"(?i)(^|\.)localhost\.?$")


def check_no_controls(value: str, *, field: str) -> None:
    """Raise HeaderInjectionError if ``value`` holds a control character.

    Args:
        value: The text that will end up in a header or an SMTP command.
        field: The field name the error names.

    Raises:
        HeaderInjectionError: ``value`` holds CR, LF, NUL, TAB, DEL or a Unicode
            line separator.
    """
    match = _FORBIDDEN.search(value)
    if match:
        char = match.group()
        raise HeaderInjectionError(
            f"{field}: control character {char!r} is not allowed in "
            f"{excerpt(value, match.start())}",
            field=field,
        )
    check_encodable(value, field=field)


def excerpt(value: str, at: int = 0) -> str:
    """Return ``value`` for an error message: repr'd, and cut around ``at`` if long.

    Hostile values can be megabytes; an error is one readable line.
    """
    if len(value) <= EXCERPT_LENGTH:
        return repr(value)
    start = max(0, min(at - EXCERPT_LENGTH // 2, len(value) - EXCERPT_LENGTH))
    shown = repr(value[start : start + EXCERPT_LENGTH])
    before = "..." if start > 0 else ""
    after = "..." if start + EXCERPT_LENGTH < len(value) else ""
    return f"{before}{shown}{after} ({len(value):,} characters)"


def check_encodable(value: str, *, field: str) -> None:
    """Raise MessageError if ``value`` cannot be encoded as UTF-8.

    Raises:
        MessageError: ``value`` holds a lone surrogate (text decoded with
            ``errors="surrogateescape"``, or a broken JSON escape).
    """
    # Only a lone surrogate stops UTF-8: trying is many times cheaper than
    # the search, which then says where it is.
    if value.isascii() or _is_utf8(value):
        return
    match = _SURROGATE.search(value)
    if match:
        raise MessageError(
            f"{field}: not valid Unicode (lone surrogate {match.group()!r} at "
            f"position {match.start()})",
            field=field,
        )


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_header_text(value: str, *, field: str) -> None:
    """Raise unless ``value`` is safe in a header, also once RFC 2047-decoded.

    CVE-2024-6923: an encoded word can hide a newline that a vulnerable
    generator or a careless reader turns into a new header. We write such text
    literally (encoded again), but a value that decodes to a control character
    is almost certainly an injection attempt: refuse it.

    Raises:
        HeaderInjectionError: ``value`` holds a control character, or an
            encoded word in it decodes to one.
        MessageError: ``value`` is not valid Unicode.
    """
    check_no_controls(value, field=field)
    if "=?" not in value:
        return
    try:
        decoded = str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        # Not a well-formed encoded word: nobody decodes it, and we write it
        # literally (encoded again).
        return
    if decoded != value and _FORBIDDEN.search(decoded):
        raise HeaderInjectionError(
            f"{field}: encoded word decodes to a control character in {excerpt(value)}",
            field=field,
        )


@dataclass(frozen=True, slots=True)
class Address:
    """One validated mailbox: an address and an optional display name.

    Attributes:
        addr_spec: The address as validated (``local@domain``, domain as written).
        display_name: The human name shown before the address; may be empty.
            A run of spaces in it is one space (RFC 5322 3.2.2).
        envelope: The form used on the SMTP envelope and in headers: the domain
            in its IDNA (ASCII) form.
        needs_smtputf8: Whether the local part is non-ASCII, so that sending it
            needs the server's SMTPUTF8 extension.
    """

    addr_spec: str
    display_name: str = ""
    envelope: str = ""
    needs_smtputf8: bool = False

    @classmethod
    def parse(cls, value: str | Address, *, field: str) -> Address:
        """Parse ``"Name <a@x.org>"``, ``"<a@x.org>"`` or ``"a@x.org"``.

        Args:
            value: The text to parse, or an Address (returned as is).
            field: The field name errors should name.

        Returns:
            The validated address.

        Raises:
            HeaderInjectionError: The value holds a control character.
            InvalidAddressError: The value is not exactly one valid address.
        """
        if isinstance(value, Address):
            return value
        if not isinstance(value, str):
            raise InvalidAddressError(
                f"{field}: expected an address string, got {type(value).__name__}",
                field=field,
            )
        return _parse_cached(value, field)

    @classmethod
    def create(cls, addr_spec: str, display_name: str = "", *, field: str) -> Address:
        """Validate an address and a display name given separately.

        Args:
            addr_spec: The bare address.
            display_name: The name to show; any printable text.
            field: The field name errors should name.

        Returns:
            The validated address.

        Raises:
            HeaderInjectionError: Either part holds a control character.
            InvalidAddressError: ``addr_spec`` is not one valid address.
        """
        check_header_text(display_name, field=field)
        return _validated(addr_spec, display_name, field)

    def __str__(self) -> str:
        if not self.display_name:
            return self.addr_spec
        name = self.display_name
        if _NAME_SPECIALS.search(name):
            # Quoted (RFC 5322 3.2.4), so that str() parses back to this address.
            escaped = name.replace("\\", "\\\\").replace('"', '\\"')
            name = f'"{escaped}"'
        return f"{name} <{self.addr_spec}>"


@lru_cache(maxsize=4096)
def _parse_cached(value: str, field: str) -> Address:
    # Batches repeat the same sender and reply-to on every message: cache them.
    check_no_controls(value, field=field)
    match = _NAME_ADDR.match(value)
    if match:
        raw_name = match.group("name")
        name = _unquote(raw_name)
        check_header_text(name, field=field)
        if not _is_quoted(raw_name) and _NAME_SPECIALS.search(raw_name):
            # RFC 5322 3.2.3: specials need quotes. Unquoted, they make one
            # address read as two ("alice@example.org(<bob@example.org>",
            # CVE-2023-27043): refuse rather than guess which was meant.
            raise InvalidAddressError(
                f"{field}: display name {excerpt(raw_name)} must be in double quotes "
                'to contain any of ()<>[]:;@\\,"',
                field=field,
            )
        addr = match.group("addr").strip()
    else:
        name, addr = "", value.strip()
    return _validated(addr, name, field)


def _is_quoted(name: str) -> bool:
    return len(name) >= 2 and name[0] == '"' and name[-1] == '"'


def _unquote(name: str) -> str:
    if _is_quoted(name):
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def _validated(addr: str, display_name: str, field: str) -> Address:
    check_no_controls(addr, field=field)
    if not addr:
        raise InvalidAddressError(f"{field}: empty address", field=field)
    if any(sep in addr for sep in ",;") or addr.count("@") > 1:
        raise InvalidAddressError(
            f"{field}: one address per entry, got {excerpt(addr)}", field=field
        )
    local, at, domain = addr.rpartition("@")
    checked_domain = domain
    # The test first: the substitution alone took a third of the fast path.
    if "localhost" in domain[-10:].lower():
        checked_domain = _LOCALHOST.sub(r"\1test", domain)
    checked = _checked_fast(local, checked_domain) if at else None
    if checked is None:
        # Without an @, the validator's own reason ("must have an @-sign"),
        # not the one for "@broken" ("something before the @-sign").
        checked = _checked(f"{local}@{checked_domain}" if at else addr, field)
    local_part, ascii_domain = checked
    if checked_domain != domain:
        ascii_domain = domain.lower()
    return Address(
        addr_spec=addr,
        # RFC 5322 3.2.2: a run of spaces in a phrase means one space, and
        # Python's parser reads it so inside encoded words: say it up front.
        display_name=_SPACE_RUN.sub(" ", display_name),
        envelope=f"{local_part}@{ascii_domain}",
        needs_smtputf8=not local_part.isascii(),
    )


def _checked(addr: str, field: str) -> tuple[str, str]:
    """Return the local part and ASCII domain email-validator makes of ``addr``.

    Raises:
        InvalidAddressError: The library refuses it (its reason is quoted).
    """
    try:
        result = _validate_email(
            addr,
            check_deliverability=False,
            test_environment=True,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            # Keep RFC 5321's 64-octet limit on the local part (email-validator
            # 2.3 stopped checking it by default).
            strict=True,
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidAddressError(
            f"{field}: invalid address {excerpt(addr)}: {exc}", field=field
        ) from None
    return result.local_part, result.ascii_domain


def _checked_fast(local: str, domain: str) -> tuple[str, str] | None:
    """Return what ``_checked`` would for a plain ASCII address, or None to ask it.

    Most addresses are an ASCII dot-atom before the @ and letters, digits,
    hyphens and dots after it. For those, ``validate_email`` with our options
    splits at the @ (no quotes, no angle brackets, nothing Unicode could
    combine), accepts the local part by the library's own dot-atom pattern
    and length limit, lower-cases RFC 2142 role names, asks its (memoised)
    domain check, and checks the address's length: that is all this does,
    with the library's constants, skipping its character-by-character split
    (three quarters of its cost). Anything else, and anything refused here,
    goes to the library, so its answer and its reasons stay the only ones.
    tests/unit/content/test_address_fast_path.py holds the two to the same
    answers.
    """
    if (
        _check_domain is None
        or len(local) > LOCAL_PART_MAX_LENGTH
        or not DOT_ATOM_TEXT.match(local)
        or not _LDH_DOMAIN.fullmatch(domain)
    ):
        return None
    try:
        checked = _check_domain(
            domain,
            test_environment=True,
            globally_deliverable=email_validator.GLOBALLY_DELIVERABLE,
        )
    except email_validator.EmailNotValidError:
        return None
    ascii_domain: str = checked["ascii_domain"]
    # The library measures the address as given, normalised (the domain in
    # Unicode when it has Punycode labels) and in ASCII, each in UTF-8; the
    # local part is ASCII, and changing its case changes no length.
    domain_octets = max(
        len(domain), len(ascii_domain), len(checked["domain"].encode("utf-8"))
    )
    if len(local) + 1 + domain_octets > EMAIL_MAX_LENGTH:
        return None
    lowered = local.lower()
    return (lowered if lowered in _ROLE_NAMES else local), ascii_domain


def parse_addresses(
    value: str | Address | Iterable[str | Address] | None, *, field: str
) -> tuple[Address, ...]:
    """Parse one address or a collection of them into a tuple.

    A single string is one address: commas inside it are an error, never a list
    separator, so that ``"A <a@x>, b@y"`` cannot silently lose ``b@y``.

    Args:
        value: An address, a collection of addresses, or ``None``.
        field: The field name errors should name (``to[1]`` for the second item).

    Returns:
        The validated addresses, in order.
    """
    if value is None:
        return ()
    if isinstance(value, str | Address):
        return (Address.parse(value, field=field),)
    if not isinstance(value, Iterable):
        raise InvalidAddressError(
            f"{field}: expected an address or a list of addresses, "
            f"got {type(value).__name__}",
            field=field,
        )
    return tuple(
        Address.parse(item, field=f"{field}[{index}]")
        for index, item in enumerate(value)
    )
