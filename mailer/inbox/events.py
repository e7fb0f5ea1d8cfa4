"""Push changes to open pages as server-sent events (one queue per listener)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

# A listener that falls this far behind is told to reload everything.
QUEUE_SIZE = 256
# A comment line this often lets a dead connection be noticed and keeps
# proxies from timing the stream out.
KEEPALIVE_SECONDS = 15.0
_CLOSE = object()


class Broadcaster:
    """Hand each published event to every listener, until closed."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[object]] = set()
        self._closed = False

    @property
    def listeners(self) -> int:
        """Return how many streams are open."""
        return len(self._queues)

    def publish(self, event: str, data: dict[str, Any] | None = None) -> None:
        """Send ``event`` (with JSON ``data``) to every listener."""
        for queue in list(self._queues):
            try:
                queue.put_nowait((event, data or {}))
            except asyncio.QueueFull:
                # Too far behind: drop what is queued and ask for a full reload.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(("resync", {}))

    def close(self) -> None:
        """End every stream (on shutdown, so the server need not wait for them)."""
        self._closed = True
        for queue in list(self._queues):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(_CLOSE)

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield the events as ``text/event-stream`` chunks until closed."""
        queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            # Sent at once, so the page knows the stream is open.
            yield b"retry: 1000\nevent: hello\ndata: {}\n\n"
            while not self._closed:
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        item = await queue.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item is _CLOSE:
                    return
                event, data = cast(tuple[str, dict[str, Any]], item)
                payload = json.dumps(data, ensure_ascii=False)
                yield f"event: {event}\ndata: {payload}\n\n".encode()
        finally:
            self._queues.discard(queue)
