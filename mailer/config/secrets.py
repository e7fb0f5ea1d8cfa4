r"""Hide the SMTP password in any text: plain, base64 (padded or not), split over lines.

A server may quote what it received: the password itself, or the base64 that
AUTH PLAIN (``\0user\0password``) or AUTH LOGIN sent, padded or not, whole or
wrapped over two reply lines (aiosmtplib joins a multi-line reply's lines with
``\n``, each without its code). A ``Redactor`` replaces every such form with
``[redacted]``. ``MessageClient`` applies one to every reply and error a
transport hands back, before they become results, journal entries, report
lines, log records or raised errors: the one place replies and errors become
text. The AUTH step applies the same rules to its own errors, for code that
calls a transport directly.

The user name is not hidden: it is not a secret (it is often the sender's own
address, and the test kit records it), and hiding it would blank out useful
replies that quote the sender.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mailer.replies import Reply

if TYPE_CHECKING:
    from mailer.config.settings import MailerSettings

REDACTED = "[redacted]"
# Between two characters of a secret, a reply may break the line; the next line
# may repeat the reply code and the enhanced status ("535-5.7.8 abc\n535 5.7.8 def").
_LINE_BREAK = r"(?:[ \t]*[\r\n]+(?:\d{3}[ -]?)?(?:[245]\.\d{1,3}\.\d{1,3})?[ \t]*)?"


def _base64_forms(data: bytes) -> list[str]:
    """Return base64 of ``data`` (padded and not), and its stable middle at each offset.

    Inside a longer base64 text, ``data`` is encoded differently depending on
    where it starts modulo 3; the groups that hold only its own bytes are the
    same whatever surrounds it.
    """
    encoded = base64.b64encode(data).decode("ascii")
    forms = [encoded, encoded.rstrip("=")]
    for shift in range(3):
        shifted = base64.b64encode(b"\0" * shift + data).decode("ascii")
        start = 4 * ((shift + 2) // 3)  # skip the group mixing in the shift bytes
        end = 4 * ((shift + len(data)) // 3)  # and the one mixing in what follows
        forms.append(shifted[start:end])
    return forms


def secret_forms(username: str, password: str) -> list[str]:
    r"""Return every way ``password`` may come back in a reply, longest first.

    The plain password, percent-encoded (as written in ``MAILER_DSN``), and the
    base64 of the password alone (AUTH LOGIN) and of ``\0user\0password`` and
    ``user\0user\0password`` (AUTH PLAIN), each padded or not, plus the base64
    of the password at any alignment inside a longer base64 text.
    """
    if not password:
        return []
    secret = password.encode("utf-8")
    forms = {password, quote(password, safe="")}
    forms.update(_base64_forms(secret))
    user = username.encode("utf-8")
    for blob in (b"\0" + user + b"\0" + secret, user + b"\0" + user + b"\0" + secret):
        forms.update(_base64_forms(blob)[:2])
    return sorted((form for form in forms if form), key=len, reverse=True)


class Redactor:
    """Replace every form of some passwords with ``[redacted]``, in text and errors.

    Args:
        credentials: ``(username, password)`` pairs.
    """

    def __init__(self, credentials: Iterable[tuple[str, str]] = ()) -> None:
        forms: set[str] = set()
        for username, password in credentials:
            forms.update(secret_forms(username, password))
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = (
            re.compile(
                "|".join(
                    _LINE_BREAK.join(re.escape(char) for char in form)
                    for form in ordered
                )
            )
            if ordered
            else None
        )

    @classmethod
    def from_settings(cls, settings: MailerSettings) -> Redactor:
        """Return the redactor for the passwords of ``settings`` and of each relay."""
        credentials = []
        for each in (settings, *settings.relays):
            if each.smtp_password is not None:
                credentials.append(
                    (each.smtp_username or "", each.smtp_password.get_secret_value())
                )
        return cls(credentials)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        """Return ``text`` with every form of every password replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def reply(self, reply: Reply) -> Reply:
        """Return ``reply`` with its text redacted (the same object if clean)."""
        text = self.text(reply.text)
        return reply if text == reply.text else Reply(reply.code, text)

    def error(self, error: BaseException) -> None:
        """Redact an exception in place: its message, replies, and the errors it chains.

        Every string, Reply, nested error, and mapping or sequence of those
        among its ``args`` and attributes is redacted, and so is each error in
        its ``__cause__``/``__context__`` chain (a traceback prints them all).
        """
        if self._pattern is None:
            return
        seen: set[int] = set()
        current: BaseException | None = error
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self._redact_one(current, seen)
            current = current.__cause__ or current.__context__

    def _redact_one(self, error: BaseException, seen: set[int]) -> None:
        args = tuple(self._value(arg, seen) for arg in error.args)
        if any(new is not old for new, old in zip(args, error.args, strict=True)):
            error.args = args
        for name, value in list(vars(error).items()):
            new = self._value(value, seen)
            if new is not value:
                setattr(error, name, new)

    def _value(self, value: Any, seen: set[int]) -> Any:
        if isinstance(value, str):
            text = self.text(value)
            return value if text == value else text
        if isinstance(value, Reply):
            return self.reply(value)
        if isinstance(value, BaseException):
            if id(value) not in seen:
                seen.add(id(value))
                self._redact_one(value, seen)
            return value
        if isinstance(value, Mapping):
            items = {key: self._value(item, seen) for key, item in value.items()}
            changed = any(items[key] is not value[key] for key in value)
            return items if changed else value
        if isinstance(value, tuple | list):
            redacted = [self._value(item, seen) for item in value]
            changed = any(a is not b for a, b in zip(redacted, value, strict=True))
            return type(value)(redacted) if changed else value
        return value
