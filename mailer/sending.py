"""Render a template for many recipients and send the messages: send_messages().

Tests replace the client by patching ``mailer.sending.generate_message_client``,
the name this module looks up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mailer.addresses import Address
from mailer.client import generate_message_client
from mailer.exceptions import (
    ConfigError,
    InvalidRecipientsError,
    InvalidRow,
    MailerError,
)
from mailer.message import Message
from mailer.recipients import Recipient, RecipientFile, recipient_from_mapping
from mailer.results import BatchReport, SendResult
from mailer.resume import send_with_journal
from mailer.settings import MailerSettings
from mailer.templates import load_template_set, render

RecipientRow = Recipient | InvalidRow | Mapping[str, Any]


def _rows(source: Iterable[RecipientRow]) -> Iterator[Recipient | InvalidRow]:
    for position, row in enumerate(source, start=1):
        if isinstance(row, Recipient | InvalidRow):
            yield row
        else:
            yield recipient_from_mapping(row, position)


def render_row(
    template_name: str,
    recipient: Recipient,
    *,
    settings: MailerSettings,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
) -> Message:
    """Render the template for one recipient (shared context under the row's own).

    Raises:
        MailerError: The row does not render into a valid message.
    """
    values = {**(context or {}), **recipient.context}
    to: str | Address = recipient.email
    if recipient.name:
        to = Address.create(recipient.email, recipient.name, field="to")
    return render(
        template_name,
        to=to,
        context=values,
        sender=sender,
        templates_dir=settings.templates_dir,
    )


def check_rows(
    template_name: str,
    recipients: Iterable[RecipientRow],
    *,
    settings: MailerSettings,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
) -> tuple[int, list[InvalidRow]]:
    """Render and validate every row without keeping the messages.

    Returns:
        How many rows are valid, and every bad row with its line number.
    """
    valid = 0
    errors: list[InvalidRow] = []
    for row in _rows(recipients):
        if isinstance(row, InvalidRow):
            errors.append(row)
            continue
        try:
            render_row(
                template_name, row, settings=settings, context=context, sender=sender
            )
        except MailerError as exc:
            errors.append(InvalidRow(row.line, str(exc)))
        else:
            valid += 1
    return valid, errors


async def send_messages(
    template_name: str,
    recipients: Iterable[RecipientRow],
    *,
    context: Mapping[str, Any] | None = None,
    sender: str | None = None,
    settings: MailerSettings | None = None,
    skip_invalid: bool = False,
    on_result: Callable[[SendResult], None] | None = None,
    keep_results: bool = True,
    journal: Path | str | None = None,
    stop: asyncio.Event | None = None,
) -> BatchReport:
    """Render ``template_name`` for each recipient and send the messages concurrently.

    Every row is rendered and validated first, in a pass that keeps nothing in
    memory; only then is anything sent. Rows are read again for sending, so
    ``recipients`` should be re-iterable (a list, a RecipientFile); a one-shot
    iterator is first collected into a list.

    Args:
        template_name: The template set to render.
        recipients: Rows: ``Recipient`` objects or mappings with an ``email``
            key (and ``name``, and any template variables).
        context: Variables shared by every row (a row's own values win).
        sender: The From address; default ``MAILER_FROM``.
        settings: Default ``MailerSettings()``.
        skip_invalid: Send the valid rows and report the bad ones, instead of
            refusing the whole batch.
        on_result: Called with each result as it completes (for progress).
        keep_results: Keep every result in the report (turn off for huge batches
            whose results go to ``on_result``).
        journal: Record every message's state in this SQLite file. If it
            exists, resume the batch it holds: what was sent is not sent again
            (see ``mailer.resume``). It must be the journal of this template
            and these recipients.
        stop: Set it to stop the batch: no new message starts, attempts in
            flight get ``MAILER_SHUTDOWN_GRACE`` seconds, the rest end
            ``pending`` (and stay pending in the journal).

    Returns:
        The report: counts, per-message results and skipped rows.

    Raises:
        InvalidRecipientsError: Some rows are bad and ``skip_invalid`` is off;
            nothing was sent.
        JournalError: ``journal`` belongs to another batch or is in use.
        ConfigError: No sender is known.
        TemplateError: The template set is missing or does not parse.
    """
    settings = settings if settings is not None else MailerSettings()
    if iter(recipients) is recipients:
        recipients = list(recipients)
    load_template_set(template_name, settings.templates_dir)
    if sender is None and settings.default_sender is None:
        raise ConfigError(
            "MAILER_FROM: not set; nothing can be sent without a sender",
            key="MAILER_FROM",
        )
    _, errors = check_rows(
        template_name, recipients, settings=settings, context=context, sender=sender
    )
    if errors and not skip_invalid:
        raise InvalidRecipientsError(errors)

    def messages() -> Iterator[Message]:
        for row in _rows(recipients):
            if isinstance(row, InvalidRow):
                continue
            try:
                yield render_row(
                    template_name,
                    row,
                    settings=settings,
                    context=context,
                    sender=sender,
                )
            except MailerError:
                continue  # reported by check_rows

    report = BatchReport(invalid=len(errors), invalid_rows=errors)
    if journal is not None:

        def render_one(row: Recipient) -> Message:
            return render_row(
                template_name, row, settings=settings, context=context, sender=sender
            )

        return await send_with_journal(
            journal,
            template_name=template_name,
            source_label=(
                str(recipients.path)
                if isinstance(recipients, RecipientFile)
                else f"{type(recipients).__name__} of rows"
            ),
            rows=lambda: enumerate(_rows(recipients), start=1),
            render=render_one,
            client_factory=generate_message_client,
            settings=settings,
            report=report,
            on_result=on_result,
            keep_results=keep_results,
            stop=stop,
        )
    async with generate_message_client(settings) as client:
        results = await client.send_many(messages(), on_result=on_result, stop=stop)
    for result in results:
        report.add(result, keep=keep_results)
    return report
