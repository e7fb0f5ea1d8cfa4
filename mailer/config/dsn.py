"""Split MAILER_DSN into relays: one URL, or several in failover()/roundrobin().

Grammar::

    smtp://[user[:password]@]host[:port][?option=value&...]
    smtps://...                                   implicit TLS (tls=tls)
    failover(DSN DSN ...)                         in order, the next when one fails
    roundrobin(DSN DSN ...)                       in rotation
    console://                                    print each message; send nothing

Options: ``tls`` (none, opportunistic, starttls, tls), ``timeout`` (seconds
per SMTP command), ``ca_file`` and ``local_hostname``, as the ``MAILER_SMTP_*``
keys of the same names, and ``rate`` (this relay's ``MAILER_RATE_LIMIT``:
``?rate=50/s+burst=10``). The user name and password are percent-decoded: a
character that would end the user-info part of a URL (``/ ? # @``) and ``%``
itself must be written percent-encoded (``%2F %3F %23 %40 %25``).

This module only splits the text: each relay's values are validated by
``MailerSettings`` itself (``MailerSettings.relays``), with the same rules as
the ``MAILER_SMTP_*`` keys. Error messages name the relay and the part at
fault ("the host part") but never repeat any of the DSN, which holds the
password: not even a piece that a stray character moved into another part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

RelayMode = Literal["single", "failover", "roundrobin", "console"]
TLSMode = Literal["none", "opportunistic", "starttls", "tls"]  # MAILER_SMTP_TLS
SCHEMES: dict[str, TLSMode | None] = {"smtp": None, "smtps": "tls"}
# DSN option -> the settings field it sets.
OPTIONS = {
    "tls": "smtp_tls",
    "timeout": "timeout",
    "ca_file": "smtp_ca_file",
    "local_hostname": "smtp_local_hostname",
    "rate": "rate_limit",  # 100/s, 600/min, 5000/h [burst=N] (config/rates.py)
}

# For development: messages are printed, never sent (no host, no options).
CONSOLE = "console://"

_LIST = re.compile(r"^\s*(failover|roundrobin)\s*\((.*)\)\s*$", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters that end the user-info part of a URL (RFC 3986 3.2.1) or open
# another: unencoded in a password, they move its tail into the host, the
# path or the query, where an error message would quote it.
_ENDS_USER_INFO = frozenset("/?#@[]")
PERCENT_ENCODING_HINT = (
    "percent-encode these characters in the user name and password: "
    "/ as %2F, ? as %3F, # as %23, @ as %40, % as %25, a space as %20"
)


class DSNError(ValueError):
    """A DSN is malformed; the message never contains the DSN itself."""


@dataclass(frozen=True, slots=True)
class Relay:
    """One SMTP server of a DSN: its parts, as overrides of the ``MAILER_SMTP_*`` keys.

    The values are as written (percent-decoded); ``MailerSettings`` validates them.
    """

    host: str
    port: int | None = None
    tls: TLSMode | None = None
    username: str | None = None
    password: SecretStr | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Return ``host`` or ``host:port`` (never the credentials), for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def overrides(self) -> dict[str, Any]:
        """Return the settings fields this relay sets (the others keep theirs)."""
        values: dict[str, Any] = {
            "smtp_host": self.host,
            "smtp_port": self.port,
            "smtp_tls": self.tls,
            "smtp_username": self.username,
            "smtp_password": self.password,
            "smtp_local_hostname": None,
            "smtp_ca_file": None,
        }
        for option, value in self.options.items():
            if option != "tls":
                values[OPTIONS[option]] = value
        return values


@dataclass(frozen=True, slots=True)
class RelayList:
    """The relays of a DSN and how to choose between them."""

    mode: RelayMode
    relays: tuple[Relay, ...]


def parse_dsn(text: str) -> RelayList:
    """Split a DSN into its relays.

    Raises:
        DSNError: The DSN is malformed (the message says where, not what).
    """
    if text.strip() == CONSOLE:
        return RelayList("console", ())
    match = _LIST.match(text)
    if match is None:
        return RelayList("single", (_parse_relay(text.strip(), None),))
    mode: RelayMode = "failover" if match.group(1) == "failover" else "roundrobin"
    parts = match.group(2).split()
    if not parts:
        raise DSNError(f"{mode}() lists no relay")
    relays = tuple(_parse_relay(part, index) for index, part in enumerate(parts, 1))
    return RelayList(mode, relays)


def _check_user_info(text: str, where: str) -> None:
    """Refuse a user-info part holding a character that ends it (before urlsplit).

    The user-info runs from ``://`` to the last ``@``. Left to ``urlsplit``, a
    ``/``, ``?`` or ``#`` in a password ends the user-info early and the rest
    of the password becomes the host, the path or an option, which a later
    error would quote: ``not a valid host name: 'ssw0rd!'``.
    """
    _, separator, rest = text.partition("://")
    user_info, at, _ = rest.rpartition("@")
    if separator and at and not _ENDS_USER_INFO.isdisjoint(user_info):
        raise DSNError(
            f"{where}the user-info part (user name and password, before the "
            f"last @) holds a character that ends it; {PERCENT_ENCODING_HINT} "
            "(and @ as %40 in an option value too)"
        )


def _parse_relay(text: str, index: int | None) -> Relay:
    where = f"relay {index}: " if index is not None else ""
    if _CONTROL.search(text):
        raise DSNError(f"{where}control characters are not allowed")
    _check_user_info(text, where)
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError:
        raise DSNError(
            f"{where}the port part is not a number from 1 to 65535 (or the URL is "
            f"malformed; {PERCENT_ENCODING_HINT})"
        ) from None
    if url.scheme not in SCHEMES:
        raise DSNError(
            f"{where}the scheme must be smtp:// or smtps:// (or the whole DSN "
            f"{CONSOLE})" + (" (got a bare host?)" if not url.scheme else "")
        )
    host = url.hostname
    if not host:
        raise DSNError(f"{where}the host part is missing")
    if port == 0:
        raise DSNError(f"{where}the port part must be 1-65535")
    if url.path not in ("", "/") or url.fragment:
        raise DSNError(
            f"{where}a path or #fragment is not allowed after the host part "
            f"(a password holding / or #? {PERCENT_ENCODING_HINT})"
        )
    options = _options(url.query, where)
    username = unquote(url.username) if url.username else None
    password = unquote(url.password) if url.password is not None else None
    if (username is None) != (password is None):
        raise DSNError(
            f"{where}the user-info part needs both a user name and a password "
            "(user:password@), or neither"
        )
    return Relay(
        host=host,
        port=port,
        tls=_tls_mode(url.scheme, options.get("tls"), where),
        username=username,
        password=SecretStr(password) if password is not None else None,
        options=options,
    )


def _options(query: str, where: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in OPTIONS:
            raise DSNError(
                f"{where}unknown option {key!r} in the query part (known: "
                f"{', '.join(OPTIONS)})"
            )
        if key in options:
            raise DSNError(f"{where}option {key!r} is given twice")
        options[key] = value
    return options


def _tls_mode(scheme: str, option: str | None, where: str) -> TLSMode | None:
    implied = SCHEMES[scheme]
    if option is None:
        return implied
    if option not in get_args(TLSMode):
        raise DSNError(f"{where}tls must be one of {', '.join(get_args(TLSMode))}")
    if implied is not None and option != implied:
        raise DSNError(f"{where}smtps:// is implicit TLS; tls={option} contradicts it")
    mode: TLSMode = option  # type: ignore[assignment]  # checked just above
    return mode
