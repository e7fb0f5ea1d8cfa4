"""Build the one-click unsubscribe headers of RFC 8058 and RFC 2369.

Gmail and Yahoo require them of bulk senders since February 2024:
``List-Unsubscribe: <https://...>`` with ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` (the receiver POSTs to the URL, no page to click
through), optionally with a ``mailto:`` fallback.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from mailer.content.addresses import excerpt
from mailer.exceptions import HeaderInjectionError, MessageError

LIST_UNSUBSCRIBE = "List-Unsubscribe"
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe-Post"
ONE_CLICK = "List-Unsubscribe=One-Click"
# A URL goes between angle brackets on a header line: no space, no control,
# nothing that ends the bracket or the list (RFC 2369 2).
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f<>,\u2028\u2029\"]")
MAX_URL_LENGTH = 900


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Where a recipient unsubscribes: a one-click https URL and/or a mailto.

    Attributes:
        url: The https URL the receiver POSTs ``List-Unsubscribe=One-Click`` to.
        mailto: A ``mailto:`` URL, for receivers that do not do one-click.
    """

    url: str | None = None
    mailto: str | None = None

    def __post_init__(self) -> None:
        if self.url is None and self.mailto is None:
            raise MessageError(
                "unsubscribe: give an https URL, a mailto: URL, or both",
                field="unsubscribe",
            )
        if self.url is not None:
            _check_url(self.url, scheme="https")
        if self.mailto is not None:
            _check_url(self.mailto, scheme="mailto")

    @classmethod
    def parse(cls, value: str | Iterable[str] | Unsubscribe) -> Unsubscribe:
        """Return the Unsubscribe for a URL, a list of URLs, or itself.

        Raises:
            MessageError: A URL is neither https nor mailto, is malformed, or
                two URLs have the same scheme.
        """
        if isinstance(value, Unsubscribe):
            return value
        values = [value] if isinstance(value, str) else list(value)
        url = mailto = None
        for item in values:
            if not isinstance(item, str):
                raise MessageError(
                    f"unsubscribe: expected a URL, got {type(item).__name__}",
                    field="unsubscribe",
                )
            scheme = item.partition(":")[0].strip().lower()
            if scheme == "mailto":
                if mailto is not None:
                    raise MessageError(
                        "unsubscribe: give one mailto: URL", field="unsubscribe"
                    )
                mailto = item
            else:
                if url is not None:
                    raise MessageError(
                        "unsubscribe: give one https URL", field="unsubscribe"
                    )
                url = item
        return cls(url=url, mailto=mailto)

    def headers(self) -> list[tuple[str, str]]:
        """Return the header fields to add, ``(name, value)``, in order."""
        urls = [f"<{u}>" for u in (self.url, self.mailto) if u is not None]
        fields = [(LIST_UNSUBSCRIBE, ", ".join(urls))]
        if self.url is not None:
            fields.append((LIST_UNSUBSCRIBE_POST, ONE_CLICK))
        return fields


def _check_url(value: str, *, scheme: str) -> None:
    field = "unsubscribe"
    found = _URL_UNSAFE.search(value)
    if found is not None:
        error = (
            HeaderInjectionError
            if found.group() in "\r\n\x00" or ord(found.group()) < 0x20
            else MessageError
        )
        raise error(
            f"{field}: {found.group()!r} is not allowed in a URL "
            f"{excerpt(value, found.start())}; percent-encode it",
            field=field,
        )
    if len(value) > MAX_URL_LENGTH:
        raise MessageError(
            f"{field}: the URL is {len(value):,} characters, over {MAX_URL_LENGTH}",
            field=field,
        )
    parsed = urllib.parse.urlsplit(value)
    if scheme == "https":
        if parsed.scheme.lower() != "https":
            raise MessageError(
                f"{field}: one-click unsubscribe needs an https URL, not "
                f"{excerpt(value)} (RFC 8058); use https:// or a mailto: URL",
                field=field,
            )
        if not parsed.hostname:
            raise MessageError(
                f"{field}: {excerpt(value)} has no host name", field=field
            )
        return
    if parsed.scheme.lower() != "mailto" or "@" not in parsed.path:
        raise MessageError(
            f"{field}: {excerpt(value)} is not a mailto: URL with an address",
            field=field,
        )
