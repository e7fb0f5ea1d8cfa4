"""Queued sending on PostgreSQL: enqueue from your application, deliver from workers.

Needs the ``[queue]`` extra (procrastinate, psycopg) and ``MAILER_QUEUE_DSN``::

    from mailer.queue import send_later

    async with await psycopg.AsyncConnection.connect(dsn) as connection:
        async with connection.transaction():
            await connection.execute("INSERT INTO orders ...")
            message_id = await send_later(receipt, connection=connection)

``send_later`` and ``send_later_template`` load nothing heavy, so importing
this package works without the extra; the rest loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mailer.queue.enqueue import send_later, send_later_template

if TYPE_CHECKING:
    from mailer.queue.batches import EnqueuedBatch, enqueue_batch
    from mailer.queue.schema import apply_schema
    from mailer.queue.status import QueueStatus, queue_status
    from mailer.queue.worker import run_worker

_LAZY = {
    "EnqueuedBatch": "mailer.queue.batches",
    "QueueStatus": "mailer.queue.status",
    "apply_schema": "mailer.queue.schema",
    "enqueue_batch": "mailer.queue.batches",
    "queue_status": "mailer.queue.status",
    "run_worker": "mailer.queue.worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mailer.queue' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "EnqueuedBatch",
    "QueueStatus",
    "apply_schema",
    "enqueue_batch",
    "queue_status",
    "run_worker",
    "send_later",
    "send_later_template",
]
