"""Read a running ``mailer inbox`` from end-to-end tests, as SentMail records.

::

    inbox = InboxClient("http://127.0.0.1:8025")
    await inbox.clear()
    ...  # the application under test sends mail to 127.0.0.1:1025
    [mail] = await inbox.wait_for(to=Addr("bob@example.test"), subject="Reset")
    (await inbox.outbox()).assert_sent_count(1)

Every record has the envelope (Bcc included), the exact bytes and the session
(TLS, AUTH user), so the ``Outbox`` assertions and ``Mail`` matchers work as
they do on every other double. It speaks the inbox's JSON API with the standard
library's HTTP client, in a worker thread; each method has a ``_blocking``
twin for synchronous tests.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mailer.content.message import Envelope
from mailer.records import SentMail, SessionInfo
from mailer.testing.outbox import DEFAULT_WAIT, MailMatch, Outbox, _criterion

DEFAULT_URL = "http://127.0.0.1:8025"
# Polling interval while waiting: the inbox is local, a request costs little.
POLL_INTERVAL = 0.05
PAGE = 1000


class InboxError(Exception):
    """The inbox could not be reached, or refused a request."""


class InboxClient:
    """A client for the JSON API of a running ``mailer inbox``.

    Args:
        url: The inbox's web address.
        timeout: Seconds to wait for each HTTP request.
    """

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    # -- synchronous --------------------------------------------------------

    def messages_blocking(self, query: str = "") -> list[SentMail]:
        """Return the messages (oldest first), optionally those matching ``query``.

        ``query`` is the inbox's search (words, ``from:``, ``to:``...).

        Raises:
            InboxError: The inbox did not answer as expected.
        """
        # Pages come newest first: mail arriving while we page shifts the older
        # ones to later offsets, so a page may repeat what the last one held.
        # Each message is taken once, by id, and paging goes on past repeats.
        summaries: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            params = {"q": query, "offset": str(offset), "limit": str(PAGE)}
            page = self._json(
                "GET", "/api/v1/messages?" + urllib.parse.urlencode(params)
            )
            for summary in page["messages"]:
                summaries.setdefault(summary["id"], summary)
            offset += len(page["messages"])
            if not page["messages"] or offset >= page["total"]:
                break
        mails = []
        for summary in reversed(list(summaries.values())):
            try:
                raw = self._request("GET", f"/api/v1/messages/{summary['id']}/raw")
            except InboxError:
                continue  # deleted since the list was read
            mails.append(_record(summary, raw))
        return mails

    def outbox_blocking(self, query: str = "") -> Outbox:
        """Return an Outbox holding the inbox's messages now."""
        outbox = Outbox()
        for mail in self.messages_blocking(query):
            outbox.append(mail)
        return outbox

    def clear_blocking(self) -> int:
        """Delete every message; returns how many there were."""
        deleted: int = self._json("DELETE", "/api/v1/messages")["deleted"]
        return deleted

    def wait_for_blocking(
        self,
        match: MailMatch = None,
        /,
        *,
        count: int = 1,
        timeout: float = DEFAULT_WAIT,
        **fields: Any,
    ) -> list[SentMail]:
        """Wait until ``count`` messages match, and return the matching ones.

        Takes a ``Mail(...)`` matcher, a predicate, or ``Mail`` fields.

        Raises:
            AssertionError: They did not arrive in time (says what did).
        """
        criterion = _criterion(match, fields)
        deadline = time.monotonic() + timeout
        while True:
            outbox = self.outbox_blocking()
            found = [m for m in outbox if criterion is None or criterion.matches(m)]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                report = outbox._report(criterion, count, found, at_least=True)
                raise AssertionError(f"after waiting {timeout}s: {report}")
            time.sleep(POLL_INTERVAL)

    # -- asynchronous ---------------------------------------------------------

    async def messages(self, query: str = "") -> list[SentMail]:
        """Return the messages, oldest first (see ``messages_blocking``)."""
        return await asyncio.to_thread(self.messages_blocking, query)

    async def outbox(self, query: str = "") -> Outbox:
        """Return an Outbox holding the inbox's messages now."""
        return await asyncio.to_thread(self.outbox_blocking, query)

    async def clear(self) -> int:
        """Delete every message; returns how many there were."""
        return await asyncio.to_thread(self.clear_blocking)

    async def wait_for(
        self,
        match: MailMatch = None,
        /,
        *,
        count: int = 1,
        timeout: float = DEFAULT_WAIT,  # noqa: ASYNC109 - as Outbox.wait_for
        **fields: Any,
    ) -> list[SentMail]:
        """Wait until ``count`` messages match (see ``wait_for_blocking``)."""
        return await asyncio.to_thread(
            lambda: self.wait_for_blocking(
                match, count=count, timeout=timeout, **fields
            )
        )

    # -- HTTP ---------------------------------------------------------------

    def _request(self, method: str, path: str) -> bytes:
        # S310: the URL is the caller's own inbox address, http on loopback.
        request = urllib.request.Request(self.url + path, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                body: bytes = answer.read()
                return body
        except urllib.error.HTTPError as exc:
            raise InboxError(
                f"{method} {path}: the inbox answered {exc.code}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InboxError(
                f"cannot reach the inbox at {self.url}: {reason}"
            ) from None

    def _json(self, method: str, path: str) -> dict[str, Any]:
        try:
            value = json.loads(self._request(method, path))
        except ValueError:
            raise InboxError(f"{method} {path}: the answer is not JSON") from None
        if not isinstance(value, dict):
            raise InboxError(f"{method} {path}: expected a JSON object")
        return value


def _record(summary: dict[str, Any], raw: bytes) -> SentMail:
    session = summary.get("session")
    info = None
    if session is not None:
        info = SessionInfo(**{**session, "peer": tuple(session["peer"])})
    return SentMail(
        envelope=Envelope(
            mail_from=summary["mail_from"], rcpt_tos=tuple(summary["rcpt_tos"])
        ),
        raw=raw,
        session=info,
    )
