"""Define the Transport protocol: envelope and wire-ready bytes in, Delivery out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from mailer.content.message import Envelope
from mailer.replies import Reply


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a transport reports for one SMTP transaction.

    Attributes:
        accepted: Envelope recipients the server accepted.
        refused: The reply for each recipient the server refused (partial refusal
            is data, not an exception).
        reply: The server's reply to the end of DATA.
        relay: The relay that took the message (``host:port``), when the
            transport knows it.
    """

    accepted: tuple[str, ...]
    refused: Mapping[str, Reply]
    reply: Reply
    relay: str | None = None


class AsyncCloseable:
    """Base for objects that hold connections or servers and release them in aclose."""

    async def aclose(self) -> None:
        """Release what the object holds. Does nothing by default."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


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
    """Optional base class: ``async with`` closes it; ``deliver`` must be overridden."""

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Send one message; subclasses must implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement deliver()")
