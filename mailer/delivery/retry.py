"""Decide when to try again: exponential backoff with jitter, within a budget.

What a failure means (transient, permanent, fatal) is decided in
``mailer.replies``; this module only says when the next attempt starts. Only
the recipients that were deferred are tried again, so a message is never
resent to someone who accepted it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mailer.config.settings import MailerSettings


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
