"""Hold one message at a time per worker: PostgreSQL advisory locks, per message.

A job delivers only the messages whose lock it holds. The locks are
session-level locks on a connection of the worker's own, so PostgreSQL drops
them the moment that worker's connection ends: a worker killed with ``kill
-9`` releases its messages with it, and a worker that is alive but was taken
for dead (a missed heartbeat, so its job was re-queued) still holds them:
the re-queued job finds them busy and waits. A message is never delivered by
two workers at once.

Advisory locks are re-entrant within one session, so two jobs of the same
worker are kept apart by the set of ids held in this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailer.queue import store

if TYPE_CHECKING:
    from mailer.queue.database import Connection

# pg_try_advisory_lock(int, int): the first key says "a mailer message" ("msg!"
# in ASCII), the second is the row id folded into 32 bits. Two ids 2**32 apart
# share a lock: one waits for the other, nothing worse.
LOCK_SPACE = 0x6D736721  # 1836279585
# Lock what can be locked among the ids, then read those rows, in one round
# trip. MATERIALIZED keeps the lock function on the job's ids only: the
# planner may not push it into a scan of the whole table.
_TRY_LOCK = (
    "WITH locked AS MATERIALIZED ("  # noqa: S608 - constants only
    " SELECT id FROM unnest(%s::bigint[]) AS t (id) WHERE pg_try_advisory_lock("
    "1836279585, (mod(id, 4294967296) - 2147483648)::int))"
    " SELECT locked.id, m.* FROM locked LEFT JOIN ("
    f"SELECT {store.COLUMNS} FROM mailer_messages"
    " WHERE id = ANY(%s::bigint[])) AS m ON m.id = locked.id ORDER BY locked.id"
)
_UNLOCK = (
    "SELECT pg_advisory_unlock(1836279585, (mod(id, 4294967296) - 2147483648)::int)"
    " FROM unnest(%s::bigint[]) AS t (id)"
)


class MessageLocks:
    """Lock messages by row id for this worker process.

    Args:
        connection: An autocommit connection used for nothing else.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.held: set[int] = set()
        self._guard = asyncio.Lock()

    async def acquire(
        self, ids: Sequence[int]
    ) -> tuple[list[int], list[store.QueuedMessage], list[int]]:
        """Try to lock each message, never waiting; read the rows of those locked.

        Returns:
            The ids now held by the caller, their rows (an id whose row is
            gone has none), and the ids held by someone else (another job of
            this worker, or another worker).
        """
        async with self._guard:
            free = [i for i in dict.fromkeys(ids) if i not in self.held]
            got: list[int] = []
            rows: list[store.QueuedMessage] = []
            if free:
                cursor = await self.connection.execute(_TRY_LOCK, [free, free])
                for row in await cursor.fetchall():
                    got.append(int(row[0]))
                    if row[1] is not None:
                        rows.append(store.row_from_database(row[1:]))
            self.held.update(got)
        busy = [i for i in dict.fromkeys(ids) if i not in set(got)]
        return got, rows, busy

    async def release(self, ids: Sequence[int]) -> None:
        """Unlock messages this process holds."""
        async with self._guard:
            mine = [i for i in ids if i in self.held]
            if mine:
                await self.connection.execute(_UNLOCK, [mine])
            self.held.difference_update(mine)
