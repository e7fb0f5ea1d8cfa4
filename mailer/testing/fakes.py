"""Fake transports (memory, mock) and the swap behind generate_message_client().

::

    outbox = Outbox()
    with use_transport(lambda settings: MemoryTransport(outbox)):
        await send_password_reset("bob@example.test")  # calls generate_message_client()
    outbox.assert_sent(to="bob@example.test")

The client still renders, validates, strips Bcc and serialises each message:
only the socket is replaced. This is what the ``mail_outbox`` fixture does.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from mailer.config.settings import MailerSettings
from mailer.content.message import Envelope
from mailer.delivery import client
from mailer.records import SentMail
from mailer.replies import Reply
from mailer.testing.outbox import Outbox
from mailer.transports.base import BaseTransport, Delivery, Transport

TransportFactory = Callable[[MailerSettings], Transport]

# use_transport() blocks may nest (a fixture and a test's own block); each
# restores what it found. The lock keeps two threads from interleaving that.
_OVERRIDE_LOCK = threading.Lock()


class MemoryTransport(BaseTransport):
    """Deliver into an Outbox: every recipient accepted, nothing sent.

    The client has already rendered, validated, stripped Bcc and serialised
    the message, so what lands here is exactly what a server would have
    received.

    Args:
        outbox: Where each message goes, as a SentMail; default a new Outbox of
            this transport's own (``transport.outbox``).
    """

    def __init__(self, outbox: Outbox | None = None) -> None:
        self.outbox = outbox if outbox is not None else Outbox()

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Keep the message and report it accepted by every recipient."""
        # Envelope is frozen and bytes immutable: the record cannot change later
        # (Django had to add deep copies for this, #34904).
        self.outbox.append(SentMail(envelope=envelope, raw=bytes(content)))
        return Delivery(
            accepted=envelope.rcpt_tos,
            refused={},
            reply=Reply(250, f"2.0.0 Ok: kept in memory as #{len(self.outbox)}"),
        )


OutboxTransport = MemoryTransport
"""The name ``mailer.testing`` first gave MemoryTransport (kept: same class)."""

Handler = Callable[[SentMail], Delivery | Awaitable[Delivery | None] | None]


class MockTransport(BaseTransport):
    """Call ``handler(sent_mail)`` for each message: the seam for failures and replies.

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


@contextmanager
def use_transport(factory: TransportFactory) -> Iterator[None]:
    """Make generate_message_client() build its clients on ``factory(settings)``.

    The swap is process-wide while the block runs (code in other threads,
    such as a web framework's test client, is covered too) and undone when it
    ends, even on error. Clients made before the block keep their transport.

    Args:
        factory: Makes the transport for each client, given its settings.
    """
    with _OVERRIDE_LOCK:
        previous = client.transport_override
        client.transport_override = factory
    try:
        yield
    finally:
        with _OVERRIDE_LOCK:
            client.transport_override = previous


@contextmanager
def capture_mail() -> Iterator[Outbox]:
    """Send every generate_message_client() message to a new Outbox in the block."""
    outbox = Outbox()
    with use_transport(lambda settings: MemoryTransport(outbox)):
        yield outbox
