"""Define Mail, a partial matcher over a whole message that explains each miss.

``Mail(to=Addr("bob@example.test"), subject=Contains("Reset"))`` compares only
the fields it is given. It equals a ``SentMail`` (from any double), a
``mailer.Message`` (what a mocked ``MessageClient.send`` receives), an
``email.message.EmailMessage`` or raw message bytes.
"""

from __future__ import annotations

import email.policy
from collections.abc import Callable, Iterable, Mapping
from email.message import EmailMessage
from typing import Any

from mailer.content.addresses import Address
from mailer.content.message import Envelope, Message
from mailer.records import SentAttachment, SentMail
from mailer.testing.attachments import AttachmentsMatch
from mailer.testing.matchers import (
    Addr,
    Matcher,
    as_matcher,
    describe,
    suggest,
)

ADDRESS_LIST_FIELDS = frozenset({"to", "cc", "bcc", "from_", "reply_to", "rcpt_tos"})
TEXT_FIELDS = frozenset({"subject", "text", "html", "message_id", "mail_from"})
OTHER_FIELDS = frozenset({"headers", "attachments", "tls", "auth_username"})
FIELDS = ADDRESS_LIST_FIELDS | TEXT_FIELDS | OTHER_FIELDS


class Unavailable:
    """Stands for a field the matched value cannot tell (Bcc of parsed bytes)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unknown: {self.reason}>"


class SameAddresses(Matcher):
    """Match a list of addresses holding exactly these (any order, any case)."""

    def __init__(self, addresses: Iterable[Any]) -> None:
        self.addresses = list(addresses)

    def matches(self, value: Any) -> bool:
        """Return whether ``value`` pairs off one to one with the addresses."""
        if isinstance(value, str) or not isinstance(value, Iterable):
            return False
        remaining = list(value)
        if len(remaining) != len(self.addresses):
            return False
        for wanted in self.addresses:
            matcher = Addr(wanted) if isinstance(wanted, str) else as_matcher(wanted)
            found = next((a for a in remaining if matcher.matches(a)), None)
            if found is None:
                return False
            remaining.remove(found)
        return True

    def __repr__(self) -> str:
        return repr(self.addresses)


class _HeadersMatch(Matcher):
    """Match a ``{name: value}`` lookup: each given header equals or matches."""

    def __init__(self, expected: Mapping[str, Any]) -> None:
        self.expected = dict(expected)

    def matches(self, value: Any) -> bool:
        return self.explain(value) is None

    def explain(self, value: Any) -> str | None:
        if not callable(value):
            return f"not available: {describe(value)}"
        misses = []
        for name, wanted in self.expected.items():
            actual = value(name)
            miss = (
                None
                if (actual is None if wanted is None else as_matcher(wanted) == actual)
                else f"{name}: wanted {wanted!r}, got {describe(actual)}"
            )
            if miss is not None:
                misses.append(miss)
        return "; ".join(misses) or None

    def __repr__(self) -> str:
        return repr(self.expected)


def _field_matcher(name: str, expected: Any) -> Matcher:
    if isinstance(expected, Matcher):
        return expected
    if name in ADDRESS_LIST_FIELDS:
        if isinstance(expected, str):
            return Addr(expected)
        if isinstance(expected, list | tuple | set | frozenset):
            return SameAddresses(expected)
    if name == "mail_from" and isinstance(expected, str):
        return Addr(expected)
    if name in {"text", "html"} and isinstance(expected, str):
        return as_matcher(expected.replace("\r\n", "\n"))
    if name == "headers" and isinstance(expected, Mapping):
        return _HeadersMatch(expected)
    if name == "attachments" and isinstance(expected, int | list | tuple):
        return AttachmentsMatch(expected)
    return as_matcher(expected)


class Mail(Matcher):
    """Match a message on the given fields only.

    Fields: ``subject``, ``text``, ``html``, ``to``, ``cc``, ``bcc``, ``from_``,
    ``reply_to``, ``rcpt_tos``, ``mail_from``, ``message_id``,
    ``headers={name: value}`` (``None`` for "absent"), ``attachments`` (a
    count, the file names, or ``Attachment(...)`` matchers), and for the test
    server ``tls`` and ``auth_username``.

    Each value is a plain value, a matcher (``Contains``, ``Regex``, ``Addr``,
    ``AnyOf``, ``Not``...) or a callable taking the field's value. For address
    lists, a string means "includes this address" and a list means "exactly
    these addresses, in any order" (case and display names ignored).

    Raises:
        TypeError: An unknown field name (with a suggestion).
    """

    def __init__(self, **fields: Any) -> None:
        # Set before anything can raise: pytest shows this half-made object in
        # the traceback's locals, and its repr must not fail there.
        self.fields = fields
        self._last_miss: str | None = None
        for name in fields:
            if name not in FIELDS:
                raise TypeError(
                    f"Mail() got an unknown field {name!r}{suggest(name, FIELDS)}; "
                    f"fields are {', '.join(sorted(FIELDS))}"
                )
        self._matchers = {name: _field_matcher(name, v) for name, v in fields.items()}

    def matches(self, value: Any) -> bool:
        """Return whether every given field of ``value`` matches."""
        return not self.misses(value)

    def explain(self, value: Any) -> str | None:
        """Return the fields that differ, or ``None`` if ``value`` matches."""
        return "; ".join(self.misses(value)) or None

    def __eq__(self, other: object) -> bool:
        # unittest.mock compares with == and then prints repr(expected): keep
        # why the last comparison failed, so its message shows the differing
        # fields ("Expected: send(Mail(...) <missed: subject: ...>)").
        miss = self.explain(other)
        self._last_miss = miss if view_of(other) is not None else None
        return miss is None

    def __ne__(self, other: object) -> bool:
        return not self == other

    def misses(self, value: Any) -> list[str]:
        """Return one line per field of ``value`` that does not match."""
        view = view_of(value)
        if view is None:
            return [f"not a message: {describe(value)}"]
        misses = []
        for name, matcher in self._matchers.items():
            actual = view(name)
            if isinstance(actual, Unavailable):
                misses.append(f"{name}: {actual.reason}")
                continue
            miss = matcher.explain(actual)
            if miss is not None:
                misses.append(f"{name}: {miss}")
        return misses

    def describe(self) -> str:
        """Return the matcher as code (``Mail(subject=Contains('Reset'))``)."""
        inner = ", ".join(f"{name}={v!r}" for name, v in self.fields.items())
        return f"Mail({inner})"

    def __repr__(self) -> str:
        missed = f" <missed: {self._last_miss}>" if self._last_miss else ""
        return f"{self.describe()}{missed}"


FieldView = Callable[[str], Any]


def view_of(value: Any) -> FieldView | None:
    """Return a function giving each Mail field of ``value``, or ``None``.

    Args:
        value: A SentMail, a mailer Message, an EmailMessage or message bytes.
    """
    if isinstance(value, SentMail):
        return _sent_mail_view(value, envelope_known=True)
    if isinstance(value, Message):
        return _message_view(value)
    if isinstance(value, EmailMessage):
        value = value.as_bytes(policy=email.policy.SMTP)
    if isinstance(value, bytes | bytearray):
        parsed = SentMail(envelope=Envelope("", ()), raw=bytes(value))
        return _sent_mail_view(parsed, envelope_known=False)
    return None


def _sent_mail_view(mail: SentMail, *, envelope_known: bool) -> FieldView:
    def field(name: str) -> Any:
        if name in {"bcc", "rcpt_tos", "mail_from"} and not envelope_known:
            return Unavailable("no envelope in a parsed message (use a SentMail)")
        if name in {"tls", "auth_username"}:
            if mail.session is None:
                return Unavailable("only mail received by the test SMTP server has it")
            return getattr(mail.session, name)
        if name == "mail_from":
            return mail.envelope.mail_from
        if name == "rcpt_tos":
            return mail.envelope.rcpt_tos
        if name == "headers":
            return mail.header
        return getattr(mail, name)

    return field


def _message_view(message: Message) -> FieldView:
    def addresses(values: tuple[Address, ...]) -> tuple[str, ...]:
        return tuple(address.addr_spec for address in values)

    def header(name: str) -> str | None:
        wanted = name.casefold()
        return next((v for k, v in message.headers if k.casefold() == wanted), None)

    def field(name: str) -> Any:
        sender = message.sender
        values: dict[str, Any] = {
            "to": addresses(message.to),
            "cc": addresses(message.cc),
            "bcc": addresses(message.bcc),
            "reply_to": addresses(message.reply_to),
            "subject": message.subject,
            "text": message.body.replace("\r\n", "\n"),
            "html": message.html,
            "headers": header,
            "attachments": tuple(
                SentAttachment(
                    filename=a.filename,
                    content_type=a.content_type,
                    content=a.read(),
                    disposition=a.disposition,
                    content_id=a.content_id,
                )
                for a in message.attachments
            ),
        }
        if name in values:
            return values[name]
        if name in {"from_", "mail_from"}:
            if sender is None:
                return Unavailable("the Message has no sender (MAILER_FROM applies)")
            return (sender.addr_spec,) if name == "from_" else sender.envelope
        if name == "rcpt_tos":
            seen: dict[str, None] = {}
            for address in (*message.to, *message.cc, *message.bcc):
                seen.setdefault(address.envelope)
            return tuple(seen)
        if name == "message_id":
            return Unavailable("a Message gets its Message-ID when it is sent")
        return Unavailable("only mail received by the test SMTP server has it")

    return field


__all__ = ["FIELDS", "Mail", "SameAddresses"]
