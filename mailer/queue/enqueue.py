"""Enqueue mail from application code: send_later() and send_later_template().

Each call validates the message, gives it its Message-ID and Date, and inserts it
(``pending``) together with its job, in one transaction: the caller's own when
it passes its psycopg connection (a transactional outbox: the order row and
its receipt commit or roll back together), or a short one of its own. The
Message-ID is returned at once; a worker (``mailer worker``) sends it.

Tests swap the database for ``mailer.testing``'s fake queue (the
``mail_queue`` fixture), through ``queue_override``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from mailer.config.settings import MailerSettings
from mailer.content.addresses import Address
from mailer.content.message import AddressInput, Message
from mailer.delivery.prepare import Preparer
from mailer.queue.codec import encode_message
from mailer.templates.sets import render

if TYPE_CHECKING:
    from procrastinate import PsycopgConnector
    from procrastinate.types import JSONValue

    from mailer.queue.database import Connection


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A message checked for sending, with its Message-ID, Date and stored form.

    The Date is fixed here, with the Message-ID, and stored with them: every
    attempt writes both, so every attempt sends the same bytes.
    """

    message: Message
    message_id: str
    email: str
    encoded: dict[str, Any]
    sender: Address
    date: str


class QueueRecorder(Protocol):
    """What the test kit's fake queue offers in place of the database."""

    def record(self, prepared: PreparedMessage, *, template: str | None) -> None:
        """Keep one enqueued message."""
        ...


# The test seam: while mailer.testing's fake queue is active, enqueued mail is
# recorded there instead of in PostgreSQL. Set and restored only by the kit.
queue_override: QueueRecorder | None = None


def prepare(message: Message, settings: MailerSettings) -> PreparedMessage:
    """Check that a worker could send ``message`` and give it its Message-ID.

    Raises:
        ConfigError: No sender: the message has none and ``MAILER_FROM`` is
            not set.
        MessageError: Over ``MAILER_MAX_RECIPIENTS`` or ``MAILER_MAX_MESSAGE_SIZE``.
    """
    # The client's own checks, in its order (a file over the limit is refused
    # from its size, never read); the worker signs, with its key.
    outgoing = Preparer(settings, sign=False).prepare(message)
    sender = message.sender or settings.default_sender
    assert sender is not None  # noqa: S101 - prepare refused a message without
    return PreparedMessage(
        message=message,
        message_id=outgoing.message_id,
        email=message.to[0].addr_spec,
        encoded=encode_message(message, sender=sender),
        sender=sender,
        date=outgoing.date,
    )


@contextlib.asynccontextmanager
async def _transaction(
    settings: MailerSettings,
    connection: Connection | None,
    connector: PsycopgConnector | None,
) -> AsyncIterator[Connection]:
    """Yield a connection inside a transaction (a savepoint in the caller's)."""
    from mailer.queue.database import connect

    if connection is not None and connector is not None:
        raise TypeError("give a connection or a connector, not both")
    if connection is not None:
        from psycopg.pq import TransactionStatus

        idle = connection.info.transaction_status == TransactionStatus.IDLE
        if idle and not connection.autocommit:
            # No transaction yet: a transaction() block would BEGIN and COMMIT
            # on its own; the caller's implicit one, which our first statement
            # opens, must decide instead.
            yield connection
        else:
            # A savepoint in the caller's transaction, or (autocommit) one of
            # our own around the message and its job.
            async with connection.transaction():
                yield connection
    elif connector is not None:
        async with connector.pool.connection() as pooled, pooled.transaction():
            yield pooled
    else:
        async with (
            connect(settings, action="cannot enqueue") as own,
            own.transaction(),
        ):
            yield own


async def enqueue_prepared(
    connection: Connection,
    prepared: list[PreparedMessage],
    *,
    batch_id: int | None,
    lines: list[int | None],
    priority: int,
) -> list[int]:
    """Insert messages and one job for them, on ``connection``; return row ids."""
    from mailer.queue import store
    from mailer.queue.tasks import QUEUE_NAME, TASK_NAME, deferring_app

    ids = await store.insert_messages(
        connection,
        [
            (batch_id, line, item.email, item.encoded, item.message_id, item.date)
            for item, line in zip(prepared, lines, strict=True)
        ],
    )
    deferrer = deferring_app().configure_task(
        TASK_NAME, connection=connection, queue=QUEUE_NAME, priority=priority
    )
    await deferrer.defer_async(messages=cast("JSONValue", ids))
    return ids


async def send_later(
    message: Message,
    /,
    *,
    connection: Connection | None = None,
    connector: PsycopgConnector | None = None,
    settings: MailerSettings | None = None,
) -> str:
    """Enqueue ``message`` for a worker to send; return its Message-ID at once.

    The message is checked as ``MessageClient.send`` would check it (sender,
    recipient and size limits) before anything is written.

    Args:
        message: The message.
        connection: Your psycopg ``AsyncConnection``: the message and its job
            are written in its current transaction (a savepoint in it), so
            they commit, or roll back, with your own writes.
        connector: Your procrastinate ``PsycopgConnector`` (opened): one of
            its pool's connections is used, in a transaction of its own.
        settings: Default ``MailerSettings()``; without ``connection`` or
            ``connector``, ``MAILER_QUEUE_DSN`` says where the queue is.

    Returns:
        The Message-ID the message will be sent with (angle brackets
        included).

    Raises:
        ConfigError: No sender is known, or ``MAILER_QUEUE_DSN`` is needed and
            not set (or the ``[queue]`` extra is missing).
        MessageError: The message is over a limit.
        QueueError: The queue database cannot be used.
    """
    settings = settings if settings is not None else MailerSettings()
    prepared = prepare(message, settings)
    recorder = queue_override
    if recorder is not None:
        recorder.record(prepared, template=None)
        return prepared.message_id
    await _enqueue_one(prepared, settings, connection, connector)
    return prepared.message_id


async def _enqueue_one(
    prepared: PreparedMessage,
    settings: MailerSettings,
    connection: Connection | None,
    connector: PsycopgConnector | None,
) -> None:
    from mailer.queue.database import database_errors, queue_dsn, require_extra

    require_extra()  # one line naming the extra, not an ImportError
    from mailer.queue.tasks import SINGLE_PRIORITY

    dsn = queue_dsn(settings) if settings.queue_dsn is not None else None
    with database_errors("cannot enqueue", dsn):
        async with _transaction(settings, connection, connector) as transaction:
            await enqueue_prepared(
                transaction,
                [prepared],
                batch_id=None,
                lines=[None],
                priority=SINGLE_PRIORITY,
            )


async def send_later_template(
    name: str,
    /,
    *,
    to: AddressInput,
    context: Mapping[str, Any] | None = None,
    sender: str | Address | None = None,
    connection: Connection | None = None,
    connector: PsycopgConnector | None = None,
    settings: MailerSettings | None = None,
) -> str:
    """Render a template set now and enqueue the message; return its Message-ID.

    Rendering happens here, so a template error (an undefined variable, a
    missing set) is raised to the caller, before anything is enqueued, and
    workers need no templates of their own.

    Args:
        name: The template set (under ``MAILER_TEMPLATES_DIR``).
        to: The recipient(s).
        context: The template variables.
        sender: The From address; default ``MAILER_FROM``.
        connection: As for ``send_later``.
        connector: As for ``send_later``.
        settings: As for ``send_later``.

    Raises:
        TemplateError: The set is missing or does not render.
        ConfigError: As for ``send_later``.
        MessageError: As for ``send_later``.
        QueueError: As for ``send_later``.
    """
    settings = settings if settings is not None else MailerSettings()
    message = render(name, to=to, context=context, sender=sender, settings=settings)
    prepared = prepare(message, settings)
    recorder = queue_override
    if recorder is not None:
        recorder.record(prepared, template=name)
        return prepared.message_id
    await _enqueue_one(prepared, settings, connection, connector)
    return prepared.message_id
