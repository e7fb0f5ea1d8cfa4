"""Define the Transport protocol: envelope and wire-ready bytes in, Delivery out."""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

from mailer.lifecycle import AsyncCloseable
from mailer.message import Envelope
from mailer.results import Delivery


@runtime_checkable
class Transport(Protocol):
    """Something that delivers serialised messages.

    Rendering, validation, Bcc stripping and serialisation happen before a
    transport is called, in ``MessageClient``, so that every fake runs the whole
    pipeline except the socket.

    ``deliver`` must be safe to call from many tasks at once, raise only
    ``DeliveryError`` subclasses, and report a partial refusal as data
    (``Delivery.refused``), not as an exception.
    """

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Send one message and return what the server said."""
        ...

    async def aclose(self) -> None:
        """Release every connection or resource the transport holds."""
        ...


class BaseTransport(AsyncCloseable):
    """Optional base class: an async context manager around ``open``/``aclose``."""

    async def open(self) -> None:
        """Prepare the transport; called on ``async with``. Does nothing by default."""

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Send one message; subclasses must implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement deliver()")

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.aclose()
            raise
        return self
