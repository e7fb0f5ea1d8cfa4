"""Transports: what moves a serialised message (SMTP, memory, mock, console)."""

from mailer.transports.base import BaseTransport, Transport
from mailer.transports.console import ConsoleTransport
from mailer.transports.failover import FailoverTransport
from mailer.transports.memory import MemoryTransport
from mailer.transports.mock import MockTransport
from mailer.transports.smtp import SMTPTransport

__all__ = [
    "BaseTransport",
    "ConsoleTransport",
    "FailoverTransport",
    "MemoryTransport",
    "MockTransport",
    "SMTPTransport",
    "Transport",
]
