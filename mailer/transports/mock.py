"""Drive delivery from a handler: the seam for unit tests of failures and replies."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from mailer.message import Envelope
from mailer.results import Delivery, Reply
from mailer.testing.outbox import Outbox
from mailer.testing.records import SentMail
from mailer.transports.base import BaseTransport

Handler = Callable[[SentMail], Delivery | Awaitable[Delivery | None] | None]


class MockTransport(BaseTransport):
    """Call ``handler(sent_mail)`` for each message.

    The handler returns a Delivery (or ``None`` for "all accepted, 250 OK"), or
    raises a DeliveryError to simulate a failure. It may be sync or async.
    Every message handed over is also kept in ``self.outbox`` (an Outbox).
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.outbox = Outbox()

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Record the message and return what the handler decides."""
        sent = SentMail(envelope=envelope, raw=bytes(content))
        self.outbox.append(sent)
        outcome = self.handler(sent)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome is None:
            return Delivery(envelope.rcpt_tos, {}, Reply(250, "2.0.0 OK"))
        return outcome
