"""A fake mail queue for unit tests: what send_later enqueued, and running it.

::

    with fake_queue() as queue:
        await place_order(...)               # calls send_later(...)
    queue.assert_enqueued(Mail(to=Addr("bob@example.test"), subject="Receipt"))

With the fake active, ``send_later`` and ``send_later_template`` check the
message exactly as they do for PostgreSQL (sender, limits, the template
rendered) and give it its Message-ID, but record it here: no database, no
extra installed. ``await queue.run_jobs()`` then sends what was enqueued
through ``generate_message_client()`` (so into ``mail_outbox`` when that
fixture is active), with the same Message-IDs, like Laravel's
``Mail::fake()`` + ``assertQueued`` and Rails' ``deliver_enqueued_emails``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.content.serialize import serialize
from mailer.delivery import client as client_module
from mailer.delivery.results import SendResult
from mailer.queue import enqueue
from mailer.queue.codec import decode_message
from mailer.queue.enqueue import PreparedMessage
from mailer.records import SentMail
from mailer.testing.outbox import MailMatch, Outbox

_OVERRIDE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class QueuedMail:
    """One message enqueued while the fake queue was active.

    Attributes:
        message: The message, its sender resolved.
        message_id: The Message-ID ``send_later`` returned.
        template: The template set, for ``send_later_template``.
        mail: The message as a worker would send it (for matchers).
        date: The Date header it was given at enqueue time (a worker writes
            the same one, so its bytes are those of ``mail``).
    """

    message: Message
    message_id: str
    template: str | None
    mail: SentMail
    date: str = ""


class FakeQueue:
    """The mail enqueued during a test, with assertions and a way to send it."""

    def __init__(self) -> None:
        self.enqueued = Outbox()
        self._jobs: list[QueuedMail] = []
        self._lock = threading.Lock()

    @property
    def jobs(self) -> list[QueuedMail]:
        """Return what is enqueued and not yet run, oldest first."""
        with self._lock:
            return list(self._jobs)

    def record(self, prepared: PreparedMessage, *, template: str | None) -> None:
        """Keep one enqueued message (called by send_later while active)."""
        # What the worker will send: the stored form, its sender resolved.
        message = decode_message(prepared.encoded)
        sender = prepared.sender
        _, raw = serialize(
            message, sender, message_id=prepared.message_id, date=prepared.date
        )
        mail = SentMail(envelope=message.envelope(sender), raw=raw)
        queued = QueuedMail(
            message, prepared.message_id, template, mail, date=prepared.date
        )
        with self._lock:
            self._jobs.append(queued)
        self.enqueued.append(mail)

    def _check(self, check: Any, *args: Any, **kwargs: Any) -> None:
        try:
            check(*args, **kwargs)
        except AssertionError as exc:
            text = str(exc).replace("(nothing was sent)", "(nothing was enqueued)")
            raise AssertionError(f"mail queue: {text}") from None

    def assert_enqueued(
        self, match: MailMatch = None, /, *, count: int | None = None, **fields: Any
    ) -> None:
        """Check that mail matching was enqueued (exactly ``count`` times, if given).

        Raises:
            AssertionError: Naming the nearest miss.
        """
        self._check(self.enqueued.assert_sent, match, count=count, **fields)

    def assert_not_enqueued(self, match: MailMatch = None, /, **fields: Any) -> None:
        """Check that no mail matching was enqueued (none at all, with no criterion).

        Raises:
            AssertionError: Listing what matched.
        """
        self._check(self.enqueued.assert_not_sent, match, **fields)

    def assert_nothing_enqueued(self) -> None:
        """Check that nothing at all was enqueued.

        Raises:
            AssertionError: Listing what was.
        """
        self.assert_not_enqueued()

    def clear(self) -> None:
        """Forget everything enqueued so far."""
        with self._lock:
            self._jobs.clear()
        self.enqueued.clear()

    async def run_jobs(
        self, settings: MailerSettings | None = None
    ) -> list[SendResult]:
        """Send what is enqueued, as a worker would, and empty the queue.

        Each message goes through ``generate_message_client(settings)`` with
        the Message-ID and Date it was enqueued with. ``enqueued`` keeps its record.

        Returns:
            One result per message, in the order they were enqueued.
        """
        with self._lock:
            jobs, self._jobs = self._jobs, []
        factory = client_module.generate_message_client
        async with factory(settings) as sender:
            return [
                await sender.send(
                    job.message, message_id=job.message_id, date=job.date or None
                )
                for job in jobs
            ]


@contextmanager
def fake_queue() -> Iterator[FakeQueue]:
    """Record what send_later enqueues in a FakeQueue while the block runs.

    The swap is process-wide and undone when the block ends, even on error.
    """
    queue = FakeQueue()
    with _OVERRIDE_LOCK:
        previous = enqueue.queue_override
        enqueue.queue_override = queue
    try:
        yield queue
    finally:
        with _OVERRIDE_LOCK:
            enqueue.queue_override = previous
