"""Match sent attachments: Attachment(filename=..., size=..., content=...)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mailer.testing.matchers import Matcher, as_matcher, describe

ATTACHMENT_FIELDS = (
    "filename",
    "content_type",
    "size",
    "content",
    "disposition",
    "content_id",
)
_UNSET: Any = object()


class Attachment(Matcher):
    """Match one attachment (a ``SentAttachment``) on the fields given.

    Every field is a plain value or a matcher (``Contains``, ``Regex``, a
    callable...). Use it alone or inside ``Mail(attachments=[...])``::

        assert mail.attachments[0] == Attachment(filename="invoice.pdf")
        assert outbox.last == Mail(attachments=[
            Attachment(filename=Contains(".pdf"), size=lambda n: n < 2_000_000),
            Attachment(content_id="logo@example.test", disposition="inline"),
        ])

    Args:
        filename: The file name.
        content_type: The MIME type (``"application/pdf"``).
        size: The decoded size in bytes.
        content: The decoded bytes.
        disposition: ``"attachment"`` or ``"inline"``.
        content_id: The Content-ID, without angle brackets.
    """

    def __init__(
        self,
        *,
        filename: Any = _UNSET,
        content_type: Any = _UNSET,
        size: Any = _UNSET,
        content: Any = _UNSET,
        disposition: Any = _UNSET,
        content_id: Any = _UNSET,
    ) -> None:
        given = {
            "filename": filename,
            "content_type": content_type,
            "size": size,
            "content": content,
            "disposition": disposition,
            "content_id": content_id,
        }
        self.fields = {k: v for k, v in given.items() if v is not _UNSET}
        self._matchers = {k: as_matcher(v) for k, v in self.fields.items()}

    def matches(self, value: Any) -> bool:
        """Return whether every given field of ``value`` matches."""
        return self.explain(value) is None

    def explain(self, value: Any) -> str | None:
        """Return the fields that differ, or None if ``value`` matches."""
        if not all(hasattr(value, name) for name in self.fields):
            return f"not an attachment: {describe(value)}"
        misses = []
        for name, matcher in self._matchers.items():
            actual = getattr(value, name)
            if not matcher.matches(actual):
                shown = (
                    f"{len(actual):,} bytes"
                    if name == "content" and isinstance(actual, bytes)
                    else describe(actual)
                )
                misses.append(f"{name}: wanted {self.fields[name]!r}, got {shown}")
        return "; ".join(misses) or None

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{k}=<{len(v):,} bytes>"
            if k == "content" and isinstance(v, bytes)
            # A long byte string would drown the failure message.
            else f"{k}={v!r}"
            for k, v in self.fields.items()
        )
        return f"Attachment({inner})"


class AttachmentsMatch(Matcher):
    """Match a message's attachments: a count, file names in order, or matchers.

    A list of ``Attachment`` matchers (or file names) must pair off one to one
    with the attachments, in any order.
    """

    def __init__(self, expected: int | Iterable[Any]) -> None:
        self.expected: int | list[Any] = (
            expected if isinstance(expected, int) else list(expected)
        )

    def matches(self, value: Any) -> bool:
        """Return whether the attachments match."""
        return self.explain(value) is None

    def explain(self, value: Any) -> str | None:
        """Return why the attachments do not match, or None."""
        if not isinstance(value, tuple):
            return f"not a list of attachments: {describe(value)}"
        if isinstance(self.expected, int):
            if len(value) == self.expected:
                return None
            return f"wanted {self.expected} attachment(s), got {len(value)}"
        if all(isinstance(e, str) for e in self.expected):
            names = [a.filename for a in value]
            if names == self.expected:
                return None
            return f"wanted file names {self.expected!r}, got {names!r}"
        if len(value) != len(self.expected):
            return (
                f"wanted {len(self.expected)} attachment(s), got {len(value)}: "
                f"{[a.filename for a in value]!r}"
            )
        matchers = [
            Attachment(filename=wanted)
            if isinstance(wanted, str)
            else as_matcher(wanted)
            for wanted in self.expected
        ]
        fits = [
            [index for index, attachment in enumerate(value) if m.matches(attachment)]
            for m in matchers
        ]
        paired = _pair(fits)
        for number, wanted in enumerate(self.expected):
            if number in paired:
                continue
            # No one-to-one pairing gives this matcher an attachment.
            left = [a for i, a in enumerate(value) if i not in paired.values()]
            closest = matchers[number].explain(left[0]) if len(left) == 1 else None
            return f"no attachment matches {wanted!r}" + (
                f" ({closest})" if closest else ""
            )
        return None

    def __repr__(self) -> str:
        return repr(self.expected)


def _pair(fits: list[list[int]]) -> dict[int, int]:
    """Pair each matcher with an attachment it fits, one to one, as many as can be.

    ``fits[m]`` lists the attachments matcher ``m`` accepts. A greedy pass is
    not enough: a broad matcher listed first may take the attachment a narrow
    one needs. Augmenting paths (Kuhn's algorithm) find the largest pairing.

    Returns:
        ``{matcher: attachment}`` for every matcher that could be paired.
    """
    owner: dict[int, int] = {}  # attachment -> matcher

    def place(matcher: int, seen: set[int]) -> bool:
        for attachment in fits[matcher]:
            if attachment in seen:
                continue
            seen.add(attachment)
            if attachment not in owner or place(owner[attachment], seen):
                owner[attachment] = matcher
                return True
        return False

    for matcher in range(len(fits)):
        place(matcher, set())
    return {matcher: attachment for attachment, matcher in owner.items()}
