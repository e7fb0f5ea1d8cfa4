"""Define the Transport protocol: envelope and wire-ready bytes in, Delivery out."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, TypeGuard, runtime_checkable

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


class DeliveryProgress:
    """What a transport says about one delivery while it runs: has the content started?

    A ``ProgressTransport`` calls ``content_starting`` just before it writes the
    first byte of the message content, and never once it has given the
    delivery up (its sender cancelled). Until that call, the delivery cannot
    have delivered anything: a cut-short attempt with ``content_started``
    False is certainly not ambiguous.

    Args:
        on_content: Called first (the journal notes the attempt there); if it
            raises, the content is not sent and the delivery fails with that
            error.
    """

    def __init__(self, on_content: Callable[[], None] | None = None) -> None:
        self.content_started = False
        self._on_content = on_content

    def content_starting(self) -> None:
        """Say that the content is about to be written (before its first byte)."""
        if self._on_content is not None:
            self._on_content()
        self.content_started = True


@runtime_checkable
class ProgressTransport(Protocol):
    """A transport that also reports each delivery's progress (the SMTP one does).

    For a plain ``Transport``, the client must assume that the content may
    leave as soon as ``deliver`` is called.
    """

    async def deliver_with_progress(
        self, envelope: Envelope, content: bytes, progress: DeliveryProgress, /
    ) -> Delivery:
        """Deliver like ``Transport.deliver``, calling ``progress.content_starting``."""
        ...


def reports_progress(transport: object) -> TypeGuard[ProgressTransport]:
    """Return whether ``transport`` is a ProgressTransport (cached by class).

    ``isinstance`` against a runtime-checkable protocol costs ~15 µs, once
    per attempt without the cache.
    """
    cls = type(transport)
    known = _REPORTS_PROGRESS.get(cls)
    if known is None:
        known = callable(getattr(cls, "deliver_with_progress", None))
        _REPORTS_PROGRESS[cls] = known
    return known


_REPORTS_PROGRESS: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


class BaseTransport(AsyncCloseable):
    """Optional base class: ``async with`` closes it; ``deliver`` must be overridden."""

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Send one message; subclasses must implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement deliver()")
