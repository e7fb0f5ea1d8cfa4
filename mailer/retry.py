"""Decide what to retry and when: reply classification, backoff, attempt budget.

The rules follow RFC 5321 4.2.1 and Postfix: a 4xx reply means "try again
later", a 5xx reply means "do not repeat this request". A lost connection or a
timeout counts as a 451 (RFC 5321 3.8). Only the recipients that were deferred
are tried again, so a message is never resent to someone who accepted it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from mailer.exceptions import AuthenticationError, DeliveryError, TLSError
from mailer.results import RecipientStatus, Reply
from mailer.settings import MailerSettings


class Verdict(enum.Enum):
    """What a failed attempt means for the message and for the batch."""

    TRANSIENT = "transient"  # try the deferred recipients again later
    PERMANENT = "permanent"  # this message is refused; do not repeat it
    FATAL = "fatal"  # the configuration is wrong: every message would fail


def is_transient_reply(reply: Reply) -> bool:
    """Return whether a failing reply may succeed later: anything but a 5xx.

    A 4xx says so (and so does an enhanced 4.x.x status). Any other failing
    reply is unexpected (a malformed line, which aiosmtplib reports as code
    -1, or a 250 where 354 was due): the connection is out of step and
    dropped, and the request may be repeated on a new one, within the attempt
    budget. Only a 5xx means "do not repeat this request".
    """
    return not 500 <= reply.code < 600


def is_too_many_recipients(reply: Reply) -> bool:
    """Return whether a 552 refusal of RCPT means "too many recipients".

    RFC 821 listed 552 for that limit; RFC 5321 (4.5.3.1.10) corrects it to 452
    and asks clients to treat such a 552 as temporary: the recipient is fine,
    the transaction is full. Servers that still answer so say it with the
    enhanced status 5.5.3, or in words when they send no enhanced status. Any
    other 552 (a full mailbox, 5.2.2) stays final.
    """
    if reply.code != 552:
        return False
    if reply.enhanced_status is not None:
        return reply.enhanced_status == "5.5.3"
    return "too many recipients" in reply.text.lower()


def classify_reply(reply: Reply) -> RecipientStatus:
    """Return the status a recipient gets from the server's refusal of it.

    ``reply`` answered the recipient's RCPT: a 4xx defers it, and so does a
    552 "too many recipients" (tried again in a transaction of its own); any
    other 5xx rejects it for good.
    """
    if is_transient_reply(reply) or is_too_many_recipients(reply):
        return RecipientStatus.DEFERRED
    return RecipientStatus.REJECTED


def classify_error(error: BaseException) -> Verdict:
    """Return what a failed attempt means.

    A refused login or a TLS failure is FATAL: it is a configuration error that
    every other message would hit too, and repeating logins risks locking the
    account. A DeliveryError marked transient (4xx, lost connection, timeout),
    or carrying an unexpected reply, is TRANSIENT. Anything else, including a
    bug, is PERMANENT: retrying would not help.
    """
    if isinstance(error, AuthenticationError | TLSError):
        return Verdict.FATAL
    if isinstance(error, DeliveryError) and (
        error.transient or (error.reply is not None and is_transient_reply(error.reply))
    ):
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long a message is tried.

    Attributes:
        max_attempts: Attempts per message, the first included (1 = no retry).
        backoff: The cap of the first retry's delay, in seconds; it doubles for
            each retry after that.
        max_backoff: The largest cap the doubling reaches.
        deadline: Seconds from a message's first attempt after which no new
            attempt starts (an attempt in flight is bounded by the timeouts).
    """

    max_attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    deadline: float = 300.0

    @classmethod
    def from_settings(cls, settings: MailerSettings) -> RetryPolicy:
        """Return the policy the ``MAILER_*`` retry settings describe."""
        return cls(
            max_attempts=settings.max_attempts,
            backoff=settings.retry_backoff,
            max_backoff=settings.retry_max_backoff,
            deadline=settings.send_deadline,
        )

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Return how long to wait after the ``attempts``-th attempt failed.

        Full jitter (uniform between 0 and the exponential cap) spreads the
        retries of many messages that failed together, so they do not hit the
        server again all at the same moment.
        """
        cap = min(self.max_backoff, self.backoff * 2 ** min(attempts - 1, 62))
        return (rng or _RANDOM).uniform(0, cap)

    def next_delay(
        self,
        attempts: int,
        elapsed: float,
        rng: random.Random | None = None,
    ) -> float | None:
        """Return the wait before the next attempt, or ``None`` if none is left.

        Args:
            attempts: Attempts made so far.
            elapsed: Seconds since the first attempt started.
            rng: Random source for the jitter (seed it in tests).
        """
        if attempts >= self.max_attempts:
            return None
        delay = self.delay(attempts, rng)
        if elapsed + delay >= self.deadline:
            return None
        return delay


# Jitter needs no cryptographic strength; a shared generator is enough.
_RANDOM = random.Random()  # noqa: S311
