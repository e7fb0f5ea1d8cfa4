"""Swap the transport behind generate_message_client() for an in-memory outbox.

::

    outbox = Outbox()
    with use_transport(lambda settings: OutboxTransport(outbox)):
        await send_password_reset("bob@example.test")  # calls generate_message_client()
    outbox.assert_sent(to="bob@example.test")

The client still renders, validates, strips Bcc and serialises each message:
only the socket is replaced. This is what the ``mail_outbox`` fixture does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mailer import client
from mailer.message import Envelope
from mailer.results import Delivery, Reply
from mailer.settings import MailerSettings
from mailer.testing.outbox import Outbox
from mailer.testing.records import SentMail
from mailer.transports.base import BaseTransport, Transport

TransportFactory = Callable[[MailerSettings], Transport]

# use_transport() blocks may nest (a fixture and a test's own block); each
# restores what it found. The lock keeps two threads from interleaving that.
_OVERRIDE_LOCK = threading.Lock()


class OutboxTransport(BaseTransport):
    """Deliver into an Outbox: every recipient accepted, nothing sent.

    Args:
        outbox: Where each message goes, as a SentMail.
    """

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Keep the message and report it accepted by every recipient."""
        # Envelope is frozen and bytes immutable: the record cannot change later
        # (Django had to add deep copies for this, #34904).
        self.outbox.append(SentMail(envelope=envelope, raw=bytes(content)))
        return Delivery(
            accepted=envelope.rcpt_tos,
            refused={},
            reply=Reply(
                250, f"2.0.0 Ok: kept in the test outbox as #{len(self.outbox)}"
            ),
        )


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
    with use_transport(lambda settings: OutboxTransport(outbox)):
        yield outbox
