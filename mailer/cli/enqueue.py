"""Run ``mailer send --queue``: check the batch, enqueue it, print its id."""

from __future__ import annotations

import time
from pathlib import Path

from mailer.bulk.recipients import RecipientFile
from mailer.cli.common import EXIT_OK, err, fail, run_command
from mailer.config.settings import MailerSettings


def enqueue(
    template: str,
    source: RecipientFile,
    settings: MailerSettings,
    skip_invalid: bool,
    report: Path | None,
    journal: Path | None,
    job_size: int | None,
    attachments: object | None = None,
) -> int:
    """Enqueue the batch; return the exit code (failures exit 2 via ``fail``)."""
    if attachments is not None:
        # Each queued message stores its own content: one shared file would be
        # copied into every row of the batch.
        raise fail(
            "--attach/--attach-column: a queued batch cannot carry attachments "
            "yet; send it without --queue, or enqueue messages with "
            "send_later(Message(..., attachments=[...]))"
        )
    if journal is not None:
        raise fail(
            "--journal: a queued batch keeps its state in the queue database; "
            "drop --journal (see `mailer status --batch ID`)"
        )
    if report is not None:
        raise fail(
            "--report: a queued batch is sent later by workers; drop --report "
            "and follow it with `mailer status --batch ID`"
        )
    return run_command(_enqueue(template, source, settings, skip_invalid, job_size))


async def _enqueue(
    template: str,
    source: RecipientFile,
    settings: MailerSettings,
    skip_invalid: bool,
    job_size: int | None,
) -> int:
    from mailer.queue.batches import enqueue_batch

    started = time.perf_counter()
    batch = await enqueue_batch(
        template,
        source,
        settings=settings,
        skip_invalid=skip_invalid,
        job_size=job_size,
    )
    for row in batch.invalid:
        err.print(f"skipped line {row.line}: {row.error}", markup=False)
    elapsed = time.perf_counter() - started
    print(
        f"batch {batch.batch_id}: {batch.messages} message(s) enqueued in "
        f"{batch.jobs} job(s), {len(batch.invalid)} invalid row(s) skipped, "
        f"in {elapsed:.2f}s"
    )
    print(f"follow it with: mailer status --batch {batch.batch_id}")
    return EXIT_OK
