"""Keep delivered messages in memory instead of sending them."""

from __future__ import annotations

from mailer.message import Envelope
from mailer.results import Delivery, Reply
from mailer.testing.outbox import Outbox
from mailer.testing.records import SentMail
from mailer.transports.base import BaseTransport


class MemoryTransport(BaseTransport):
    """Record each message as a SentMail in ``self.outbox`` (an Outbox, per instance).

    The client has already rendered, validated and serialised the message, so
    what lands here is exactly what a server would have received.
    """

    def __init__(self) -> None:
        self.outbox = Outbox()

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Store the message and report every recipient as accepted."""
        # bytes are immutable: the record cannot change after it is stored.
        self.outbox.append(SentMail(envelope=envelope, raw=bytes(content)))
        return Delivery(
            accepted=envelope.rcpt_tos,
            refused={},
            reply=Reply(250, f"2.0.0 Ok: kept in memory as #{len(self.outbox)}"),
        )
