"""Parse a sending rate: ``MAILER_RATE_LIMIT`` and a relay's ``?rate=`` option.

Grammar (spaces around the parts are allowed)::

    COUNT/UNIT                    100/s, 600/min, 5000/h, 20000/day
    COUNT/UNIT burst=N            50/s burst=10 (also "50/s,burst=10")

Units: ``s``, ``sec``, ``second``; ``min``, ``minute``; ``h``, ``hour``;
``d``, ``day``. In a DSN write ``?rate=50/s+burst=10``: a ``+`` in a URL
query is a space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS: dict[str, float] = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
RATE_FORMAT = (
    "a count per unit, like 100/s, 600/min or 5000/h, with an optional burst=N"
)

_RATE = re.compile(
    r"\s*(?P<count>\d{1,9})\s*/\s*(?P<unit>[a-z]+)"
    r"(?:\s*[,\s]\s*burst\s*=\s*(?P<burst>\d{1,9}))?\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """How many transactions may start per period, and how many more at once.

    In no window of ``period`` seconds do more than ``count + burst``
    transactions start, and over a long run the rate is ``count / period``.

    Attributes:
        count: Transactions per period.
        period: The period, in seconds.
        burst: How many more may start at once after an idle spell.
    """

    count: int
    period: float
    burst: int = 0

    @property
    def interval(self) -> float:
        """Return the seconds between two starts at the steady rate."""
        return self.period / self.count

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}[self.period]
        text = f"{self.count}/{unit}"
        return f"{text} burst={self.burst}" if self.burst else text


def parse_rate_limit(text: str) -> RateLimit:
    """Return the RateLimit that ``text`` describes.

    Raises:
        ValueError: ``text`` is not of the form ``COUNT/UNIT [burst=N]`` or the
            count is 0 (the message never repeats the value).
    """
    match = _RATE.fullmatch(text)
    if match is None or match["unit"].lower() not in UNITS:
        raise ValueError(f"expected {RATE_FORMAT}")
    count = int(match["count"])
    if count < 1:
        raise ValueError(
            "the count must be at least 1 (leave the setting out for no limit)"
        )
    burst = int(match["burst"]) if match["burst"] is not None else 0
    return RateLimit(count, UNITS[match["unit"].lower()], burst)
