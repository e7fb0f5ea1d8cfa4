"""Define Outbox: the sent mail of one test double, with assertions that explain.

Every double (the in-memory fake, the mock spy, the SMTP test servers) fills
an Outbox, so the same assertions work on all of them::

    outbox.assert_sent(to="bob@example.test", subject=Contains("Reset"))
    mail = outbox.one(Mail(bcc=["audit@example.test"]))
    [mail] = await smtp_server.outbox.wait_for(subject="Hi")
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, overload

from mailer.records import SentMail
from mailer.testing.mail import Mail
from mailer.testing.matchers import Matcher, as_matcher

MailMatch = Matcher | Callable[[SentMail], object] | None
DEFAULT_WAIT = 5.0


def _criterion(match: MailMatch, fields: dict[str, Any]) -> Matcher | None:
    """Combine a positional matcher or predicate with field keywords."""
    if match is not None and fields:
        raise TypeError("give a matcher or field keywords, not both")
    if fields:
        return Mail(**fields)
    if match is None:
        return None
    return as_matcher(match)


def _label(mail: SentMail) -> str:
    return f"subject={mail.subject!r} to={list(mail.to)}"


class Outbox(Sequence[SentMail]):
    """Mail sent through a test double, oldest first; thread-safe.

    It is a read-only sequence (``len(outbox)``, ``outbox[0]``, iteration)
    with assertions. Matching takes a ``Mail(...)`` matcher, a plain predicate
    on ``SentMail``, or ``Mail`` fields as keywords.
    """

    def __init__(self) -> None:
        self._mails: list[SentMail] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._watchers: list[Callable[[SentMail], None]] = []

    # -- the sequence -------------------------------------------------------

    @overload
    def __getitem__(self, index: int) -> SentMail: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SentMail]: ...

    def __getitem__(self, index: int | slice) -> SentMail | Sequence[SentMail]:
        with self._lock:
            return self._mails[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._mails)

    def __iter__(self) -> Iterator[SentMail]:
        return iter(self._snapshot())

    def __eq__(self, other: object) -> bool:
        # Equal to a list (or tuple) of the same mails, as the plain list the
        # transports' outbox used to be: ``transport.outbox == []`` still works.
        if isinstance(other, Outbox):
            return self._snapshot() == other._snapshot()
        if isinstance(other, list | tuple):
            return self._snapshot() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable, like a list

    def __repr__(self) -> str:
        mails = self._snapshot()
        shown = ", ".join(repr(mail.subject) for mail in mails[:5])
        more = ", ..." if len(mails) > 5 else ""
        return f"<Outbox of {len(mails)} mail(s): [{shown}{more}]>"

    def append(self, mail: SentMail) -> None:
        """Add a mail (the doubles call this) and wake anyone waiting for it."""
        with self._arrived:
            self._mails.append(mail)
            watchers = list(self._watchers)
            self._arrived.notify_all()
        for watcher in watchers:
            watcher(mail)

    def clear(self) -> None:
        """Forget every mail sent so far."""
        with self._lock:
            self._mails.clear()

    @property
    def last(self) -> SentMail:
        """Return the newest mail.

        Raises:
            AssertionError: Nothing was sent.
        """
        mails = self._snapshot()
        if not mails:
            raise AssertionError("the outbox is empty: no mail was sent")
        return mails[-1]

    # -- finding ------------------------------------------------------------

    def filter(self, match: MailMatch = None, /, **fields: Any) -> list[SentMail]:
        """Return the mails that match, oldest first (all of them with no criterion)."""
        criterion = _criterion(match, fields)
        mails = self._snapshot()
        if criterion is None:
            return mails
        return [mail for mail in mails if criterion.matches(mail)]

    def one(self, match: MailMatch = None, /, **fields: Any) -> SentMail:
        """Return the only mail that matches.

        Raises:
            AssertionError: None or several match (the message shows the nearest
                miss or the matches).
        """
        found = self.filter(match, **fields)
        if len(found) != 1:
            raise AssertionError(self._report(_criterion(match, fields), 1, found))
        return found[0]

    # -- asserting ----------------------------------------------------------

    def assert_sent(
        self, match: MailMatch = None, /, *, count: int | None = None, **fields: Any
    ) -> list[SentMail]:
        """Check that mail matching was sent (exactly ``count`` times, if given).

        Returns:
            The matching mails.

        Raises:
            AssertionError: Naming the nearest miss when nothing matched.
        """
        found = self.filter(match, **fields)
        if (count is None and not found) or (count is not None and len(found) != count):
            raise AssertionError(self._report(_criterion(match, fields), count, found))
        return found

    def assert_not_sent(self, match: MailMatch = None, /, **fields: Any) -> None:
        """Check that no mail matching was sent (no mail at all, with no criterion).

        Raises:
            AssertionError: Listing the mails that matched.
        """
        found = self.filter(match, **fields)
        if found:
            raise AssertionError(self._report(_criterion(match, fields), 0, found))

    def assert_nothing_sent(self) -> None:
        """Check that no mail at all was sent.

        Raises:
            AssertionError: Listing what was sent.
        """
        self.assert_not_sent()

    def assert_sent_count(self, count: int, /) -> None:
        """Check that exactly ``count`` mails were sent.

        Raises:
            AssertionError: Another number was sent.
        """
        mails = self._snapshot()
        if len(mails) != count:
            listed = "; ".join(f"#{i} {_label(m)}" for i, m in enumerate(mails))
            raise AssertionError(
                f"expected {count} mail(s) sent, got {len(mails)}"
                + (f": {listed}" if listed else "")
            )

    # -- watching -----------------------------------------------------------

    @contextmanager
    def capture(self) -> Iterator[list[SentMail]]:
        """Collect the mails sent while the block runs (the list fills as they come)."""
        captured: list[SentMail] = []
        with self._lock:
            self._watchers.append(captured.append)
        try:
            yield captured
        finally:
            with self._lock:
                self._watchers.remove(captured.append)

    async def wait_for(
        self,
        match: MailMatch = None,
        /,
        *,
        count: int = 1,
        # The timeout is the point of this helper; asyncio.timeout applies it.
        timeout: float = DEFAULT_WAIT,  # noqa: ASYNC109
        **fields: Any,
    ) -> list[SentMail]:
        """Wait until ``count`` mails match, instead of sleeping.

        Returns:
            The matching mails (at least ``count``).

        Raises:
            AssertionError: They did not arrive within ``timeout`` seconds (the
                message shows the nearest miss).
        """
        criterion = _criterion(match, fields)
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake(_: SentMail) -> None:
            loop.call_soon_threadsafe(arrived.set)

        with self._lock:
            self._watchers.append(wake)
        try:
            async with asyncio.timeout(timeout):
                while len(found := self._matching(criterion)) < count:
                    await arrived.wait()
                    arrived.clear()
        except TimeoutError:
            found = self._matching(criterion)
            raise AssertionError(
                f"after waiting {timeout}s: "
                + self._report(criterion, count, found, at_least=True)
            ) from None
        finally:
            with self._lock:
                self._watchers.remove(wake)
        return found

    def wait_for_blocking(
        self,
        match: MailMatch = None,
        /,
        *,
        count: int = 1,
        timeout: float = DEFAULT_WAIT,
        **fields: Any,
    ) -> list[SentMail]:
        """Block the thread until ``count`` mails match (for synchronous tests).

        Returns:
            The matching mails (at least ``count``).

        Raises:
            AssertionError: They did not arrive within ``timeout`` seconds.
        """
        criterion = _criterion(match, fields)
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(found := self._matching(criterion, locked=True)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
        if len(found) < count:
            raise AssertionError(
                f"after waiting {timeout}s: "
                + self._report(criterion, count, found, at_least=True)
            )
        return found

    # -- helpers ------------------------------------------------------------

    def _snapshot(self) -> list[SentMail]:
        with self._lock:
            return list(self._mails)

    def _matching(
        self, criterion: Matcher | None, *, locked: bool = False
    ) -> list[SentMail]:
        mails = list(self._mails) if locked else self._snapshot()
        return [m for m in mails if criterion is None or criterion.matches(m)]

    def _report(
        self,
        criterion: Matcher | None,
        count: int | None,
        found: list[SentMail],
        *,
        at_least: bool = False,
    ) -> str:
        mails = self._snapshot()
        number = {id(mail): index for index, mail in enumerate(mails)}
        what = "mail"
        if criterion is not None:
            shown = (
                criterion.describe() if isinstance(criterion, Mail) else repr(criterion)
            )
            what = f"mail matching {shown}"
        wanted = (
            "at least 1"
            if count is None
            else (f"at least {count}" if at_least else f"exactly {count}")
        )
        text = f"expected {wanted} {what}; {len(found)} of {len(mails)} matched"
        if found and (count == 0 or (count is not None and len(found) > count)):
            listed = "; ".join(f"#{number[id(m)]} {_label(m)}" for m in found[:5])
            return f"{text}: {listed}"
        matched = {id(m) for m in found}
        misses = [m for m in mails if id(m) not in matched]
        if criterion is None or not misses:
            return text + ("" if mails else " (nothing was sent)")
        return f"{text}. Nearest miss: {self._nearest(criterion, number, misses)}"

    @staticmethod
    def _nearest(
        criterion: Matcher, number: dict[int, int], misses: list[SentMail]
    ) -> str:
        def reasons(mail: SentMail) -> list[str]:
            if isinstance(criterion, Mail):
                return criterion.misses(mail)
            return [criterion.explain(mail) or "did not match"]

        nearest = min(misses, key=lambda mail: len(reasons(mail)))
        return f"#{number[id(nearest)]} {_label(nearest)}: " + "; ".join(
            reasons(nearest)
        )
