"""Enqueue a whole batch: ``mailer send --template T --recipients F --queue``.

The rows are checked first exactly as ``mailer send`` checks them (a bad row:
nothing is enqueued). Then, in one transaction, the batch, its messages
(rendered, with their Message-IDs) and one job per ``MAILER_QUEUE_JOB_SIZE``
messages are written: workers see all of the batch or none of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mailer.bulk.recipients import (
    InvalidRow,
    Recipient,
    RecipientFile,
    recipient_from_mapping,
)
from mailer.bulk.sending import RecipientRow, check_recipients, render_row
from mailer.config.settings import MailerSettings
from mailer.exceptions import ConfigError, InvalidRecipientsError, MailerError
from mailer.queue import store
from mailer.queue.database import connect, database_errors, queue_dsn
from mailer.queue.enqueue import PreparedMessage, enqueue_prepared, prepare
from mailer.queue.tasks import BATCH_PRIORITY
from mailer.templates.sets import load_template_set


@dataclass(slots=True)
class EnqueuedBatch:
    """What ``enqueue_batch`` wrote.

    Attributes:
        batch_id: The id to give ``mailer status --batch``.
        messages: Messages enqueued.
        jobs: Jobs they were split into.
        invalid: Rows left out (with ``skip_invalid``).
    """

    batch_id: int
    messages: int
    jobs: int
    invalid: list[InvalidRow] = field(default_factory=list)


def _label(recipients: Iterable[RecipientRow]) -> str:
    if isinstance(recipients, RecipientFile):
        return str(recipients.path)
    return f"{type(recipients).__name__} of rows"


async def enqueue_batch(
    template_name: str,
    recipients: Iterable[RecipientRow],
    *,
    settings: MailerSettings,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
    skip_invalid: bool = False,
    job_size: int | None = None,
) -> EnqueuedBatch:
    """Check every row, then enqueue the batch in jobs of ``job_size`` messages.

    Args:
        template_name: The template set.
        recipients: A re-iterable source of rows (read twice: check, enqueue).
        settings: ``MAILER_QUEUE_DSN`` and the rest.
        context: Variables shared by every row.
        sender: The From address; default ``MAILER_FROM``.
        skip_invalid: Enqueue the valid rows and return the bad ones, instead
            of refusing the batch.
        job_size: Messages per job; default ``MAILER_QUEUE_JOB_SIZE``.

    Raises:
        InvalidRecipientsError: Some rows are bad and ``skip_invalid`` is off;
            nothing was enqueued.
        ConfigError: No sender, or no ``MAILER_QUEUE_DSN``.
        QueueError: The queue database cannot be used.
    """
    dsn = queue_dsn(settings)
    if sender is None and settings.default_sender is None:
        raise ConfigError(
            "MAILER_FROM: not set; nothing can be sent without a sender",
            key="MAILER_FROM",
        )
    _, errors = check_recipients(
        template_name, recipients, settings=settings, context=context, sender=sender
    )
    if errors and not skip_invalid:
        raise InvalidRecipientsError(errors)
    size = job_size or settings.queue_job_size
    templates = load_template_set(template_name, settings.templates_dir)

    # The check pass renders each row but does not build its bytes, so a row
    # over MAILER_MAX_MESSAGE_SIZE is only found here: reported like a bad
    # row of the check pass, never skipped in silence.
    checked_bad = {row.line for row in errors}
    late: list[InvalidRow] = []

    def prepared_rows() -> Iterable[tuple[int, PreparedMessage]]:
        for position, raw in enumerate(recipients, start=1):
            row = (
                raw
                if isinstance(raw, Recipient | InvalidRow)
                else recipient_from_mapping(raw, position)
            )
            if isinstance(row, InvalidRow):
                continue
            try:
                message = render_row(
                    template_name,
                    row,
                    settings=settings,
                    context=context,
                    sender=sender,
                    templates=templates,
                )
                yield row.line, prepare(message, settings)
            except MailerError as exc:
                if row.line not in checked_bad:
                    late.append(InvalidRow(row.line, str(exc)))

    from mailer.queue.schema import check_schema

    messages = jobs = 0
    with database_errors("cannot enqueue the batch", dsn):
        async with connect(settings, action="cannot enqueue the batch") as connection:
            await check_schema(connection)
            async with connection.transaction():
                batch_id = await store.create_batch(
                    connection, template=template_name, source=_label(recipients)
                )
                rows = iter(prepared_rows())
                while chunk := list(itertools.islice(rows, size)):
                    await enqueue_prepared(
                        connection,
                        [item for _, item in chunk],
                        batch_id=batch_id,
                        lines=[line for line, _ in chunk],
                        priority=BATCH_PRIORITY,
                    )
                    messages += len(chunk)
                    jobs += 1
                if late and not skip_invalid:
                    # Raised inside the transaction: nothing is enqueued.
                    raise InvalidRecipientsError(late)
                await store.set_batch_total(connection, batch_id, messages)
    invalid = sorted([*errors, *late], key=lambda row: row.line)
    return EnqueuedBatch(
        batch_id=batch_id, messages=messages, jobs=jobs, invalid=invalid
    )
