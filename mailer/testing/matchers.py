"""Match sent mail partially: Mail(...) and field matchers that explain misses.

Matchers compare by equality, so they also work inside ``unittest.mock``
assertions::

    send.assert_awaited_once_with(Mail(to=Addr("bob@example.test")))
    send.assert_has_calls([call(Mail(subject=Contains("Reset")))])
"""

from __future__ import annotations

import difflib
import email.utils
import re
from collections.abc import Callable, Iterable
from typing import Any

from mailer.records import comparable_address


def address_key(value: str) -> str:
    """Return the address in ``value`` in a form where equal addresses are equal.

    The display name is dropped, case folded and the domain put in IDNA form:
    ``"Ann <Ann@Example.TEST>"`` gives ``"ann@example.test"``.
    """
    _, address = email.utils.parseaddr(value)
    return comparable_address((address or value).strip())


def describe(value: object) -> str:
    """Return a short repr of ``value`` for failure messages."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class Matcher:
    """A value that equals whatever it matches.

    Subclasses implement ``matches`` and ``__repr__``; ``explain`` says why a
    value does not match.
    """

    def matches(self, value: Any) -> bool:
        """Return whether ``value`` matches."""
        raise NotImplementedError(f"{type(self).__name__} must implement matches()")

    def explain(self, value: Any) -> str | None:
        """Return why ``value`` does not match, or ``None`` if it does."""
        if self.matches(value):
            return None
        return f"wanted {self!r}, got {describe(value)}"

    def __eq__(self, other: object) -> bool:
        return self.matches(other)

    def __ne__(self, other: object) -> bool:
        return not self.matches(other)

    __hash__ = None  # type: ignore[assignment]  # equal to many things: unhashable


class Contains(Matcher):
    """Match text holding ``part`` (or a collection with ``part`` as an element).

    Args:
        part: The text to look for.
        case_sensitive: Compare case too (default); ``False`` folds case.
    """

    def __init__(self, part: str, *, case_sensitive: bool = True) -> None:
        self.part = part
        self.case_sensitive = case_sensitive

    def matches(self, value: Any) -> bool:
        """Return whether ``value`` contains the part."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            if self.case_sensitive:
                return self.part in value
            return self.part.casefold() in value.casefold()
        if isinstance(value, Iterable):
            return any(self.matches(item) for item in value)
        return False

    def __repr__(self) -> str:
        flag = "" if self.case_sensitive else ", case_sensitive=False"
        return f"Contains({self.part!r}{flag})"


class Regex(Matcher):
    """Match text in which ``pattern`` is found (``re.search``).

    Args:
        pattern: A regular expression, as text or compiled.
        flags: ``re`` flags, for a pattern given as text.
    """

    def __init__(self, pattern: str | re.Pattern[str], flags: int = 0) -> None:
        if isinstance(pattern, str):
            pattern = re.compile(pattern, flags)
        self.pattern = pattern

    def matches(self, value: Any) -> bool:
        """Return whether the pattern is found in ``value``."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return isinstance(value, str) and self.pattern.search(value) is not None

    def __repr__(self) -> str:
        return f"Regex({self.pattern.pattern!r})"


class Addr(Matcher):
    """Match an address: case-insensitive, display name ignored.

    Against a list of addresses (``to``, ``bcc``...), it matches when the list
    includes the address.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._key = address_key(address)

    def matches(self, value: Any) -> bool:
        """Return whether ``value`` is (or includes) the address."""
        if isinstance(value, str):
            return address_key(value) == self._key
        addr_spec = getattr(value, "addr_spec", None)
        if isinstance(addr_spec, str):
            return address_key(addr_spec) == self._key
        if isinstance(value, Iterable):
            return any(self.matches(item) for item in value)
        return False

    def __repr__(self) -> str:
        return f"Addr({self.address!r})"


class AnyOf(Matcher):
    """Match when any of the given matchers or values does."""

    def __init__(self, *options: Any) -> None:
        if not options:
            raise ValueError("AnyOf: give at least one option")
        self.options = options

    def matches(self, value: Any) -> bool:
        """Return whether one option matches ``value``."""
        return any(option == value for option in self.options)

    def __repr__(self) -> str:
        return f"AnyOf({', '.join(map(repr, self.options))})"


class AllOf(Matcher):
    """Match when every one of the given matchers or values does."""

    def __init__(self, *options: Any) -> None:
        if not options:
            raise ValueError("AllOf: give at least one option")
        self.options = options

    def matches(self, value: Any) -> bool:
        """Return whether every option matches ``value``."""
        return all(option == value for option in self.options)

    def __repr__(self) -> str:
        return f"AllOf({', '.join(map(repr, self.options))})"


class Not(Matcher):
    """Match whatever the given matcher or value does not."""

    def __init__(self, option: Any) -> None:
        self.option = option

    def matches(self, value: Any) -> bool:
        """Return whether the option does not match ``value``."""
        return bool(self.option != value)

    def __repr__(self) -> str:
        return f"Not({self.option!r})"


class Predicate(Matcher):
    """Match when ``function(value)`` is true (plain callables are wrapped in this).

    Args:
        function: The test.
        description: How the failure message names it (default: its name).
    """

    def __init__(
        self, function: Callable[[Any], object], description: str | None = None
    ) -> None:
        self.function = function
        self.description = description or getattr(function, "__name__", "predicate")

    def matches(self, value: Any) -> bool:
        """Return whether the function accepts ``value``."""
        return bool(self.function(value))

    def __repr__(self) -> str:
        return f"Predicate({self.description})"


def as_matcher(expected: Any) -> Matcher:
    """Return ``expected`` as a Matcher (a callable becomes a Predicate)."""
    if isinstance(expected, Matcher):
        return expected
    if callable(expected):
        return Predicate(expected)
    return Equals(expected)


class Equals(Matcher):
    """Match a value equal to ``expected``."""

    def __init__(self, expected: Any) -> None:
        self.expected = expected

    def matches(self, value: Any) -> bool:
        """Return whether ``value == expected``."""
        return bool(value == self.expected)

    def __repr__(self) -> str:
        return repr(self.expected)


def suggest(name: str, known: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
