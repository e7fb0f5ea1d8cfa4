"""Give closeable objects `async with`: enter returns self, exit calls aclose."""

from __future__ import annotations

from types import TracebackType
from typing import Self


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
