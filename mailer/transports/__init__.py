"""Transports: what moves a serialised message (SMTP, failover, console).

The fakes for tests live in ``mailer.testing``; ``MemoryTransport`` and
``MockTransport`` are still reachable here by their old names, loaded only
when asked for, so that importing mailer never loads the test kit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mailer.transports.base import (
    BaseTransport,
    Delivery,
    DeliveryProgress,
    ProgressTransport,
    Transport,
)
from mailer.transports.console import ConsoleTransport
from mailer.transports.failover import FailoverTransport
from mailer.transports.smtp.transport import SMTPTransport

if TYPE_CHECKING:
    from mailer.testing.fakes import MemoryTransport, MockTransport

# Old public names of the doubles, now in the test kit: resolved on first use.
_MOVED_TO_TESTING = frozenset({"MemoryTransport", "MockTransport"})


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_TESTING:
        return getattr(importlib.import_module("mailer.testing.fakes"), name)
    raise AttributeError(f"module 'mailer.transports' has no attribute {name!r}")


__all__ = [
    "BaseTransport",
    "ConsoleTransport",
    "Delivery",
    "DeliveryProgress",
    "FailoverTransport",
    "MemoryTransport",
    "MockTransport",
    "ProgressTransport",
    "SMTPTransport",
    "Transport",
]
