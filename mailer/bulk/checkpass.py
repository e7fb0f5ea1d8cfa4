"""Check one row of a batch, and prepare its message for the spool: the shared rules.

The check pass (``mailer.bulk.sending``) runs these for every row before
anything is sent, in this process or in worker processes
(``mailer.bulk.workers``), and both get the same answers: a bad row is an
``InvalidRow`` worded in the file's terms, a good one becomes a
``SpooledRow`` holding its prepared message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mailer.bulk.identity import CheckedRows
from mailer.bulk.recipients import InvalidRow, Recipient
from mailer.bulk.spool import SpooledRow
from mailer.content.message import Message
from mailer.delivery.client import failed_result
from mailer.delivery.prepare import Preparer
from mailer.delivery.state import PreparedMessage
from mailer.exceptions import MailerError, UndefinedVariableError

if TYPE_CHECKING:
    import asyncio


@dataclass(slots=True)
class Checked:
    """What the check pass found: every row's identity, and the bad rows."""

    rows: CheckedRows  # each row's line and fingerprint, the digest, repeats
    errors: list[InvalidRow]


class CheckInterruptedError(Exception):
    """The check pass saw its stop set: nothing has been sent."""


class RowRenderer(Protocol):
    """Renders one row of a batch into its Message."""

    def render(self, row: Recipient, /) -> Message:
        """Return the row's message.

        Raises:
            MailerError: The row does not render into a valid message.
        """
        ...


def check_row(
    render: Callable[[Recipient], Message],
    row: Recipient | InvalidRow,
    columns: tuple[str, ...] | None,
) -> Message | InvalidRow:
    """Return the row's message, or the row as a bad one with the reason.

    Args:
        render: Renders a row.
        row: The row (already an InvalidRow if it could not be read).
        columns: A CSV file's header, to word a missing variable in its terms.
    """
    if isinstance(row, InvalidRow):
        return row
    try:
        return render(row)
    except UndefinedVariableError as exc:
        return InvalidRow(row.line, missing_value(exc, columns))
    except MailerError as exc:
        return InvalidRow(row.line, str(exc))


def check_rows_in_order(
    render: Callable[[Recipient], Message],
    rows: Iterable[tuple[int, Recipient | InvalidRow]],
    checked: CheckedRows,
    *,
    columns: tuple[str, ...] | None = None,
    stop: asyncio.Event | None = None,
    on_valid: Callable[[int, Recipient, Message], None] | None = None,
) -> Checked:
    """Check every row in order, recording each in ``checked``; keep the bad ones.

    Args:
        render: Renders a row.
        rows: ``(position, row)`` in order.
        checked: Where each row's identity is recorded.
        columns: A CSV file's header, for the wording of a missing variable.
        stop: Read between rows: a Ctrl-C ends a long check within one row.
        on_valid: Called with each valid row's position, row and message.

    Raises:
        CheckInterruptedError: ``stop`` was set meanwhile.
    """
    errors: list[InvalidRow] = []
    for position, row in rows:
        if stop is not None and stop.is_set():
            raise CheckInterruptedError
        outcome = check_row(render, row, columns)
        if isinstance(outcome, InvalidRow):
            errors.append(outcome)
            checked.add(row, valid=False)
            continue
        assert isinstance(row, Recipient)  # noqa: S101 - it rendered
        checked.add(row, valid=True)
        if on_valid is not None:
            on_valid(position, row, outcome)
    return Checked(checked, errors)


def spooled_row(
    position: int, row: Recipient, message: Message, preparer: Preparer
) -> SpooledRow:
    """Prepare ``message`` for the spool; a message that cannot be is a failure.

    What cannot be prepared (over ``MAILER_MAX_MESSAGE_SIZE``, a sender not
    aligned with the DKIM domain) fails at its turn, unsent, as it would had
    it been prepared then.
    """
    try:
        outgoing = preparer.prepare(message)
    except MailerError as exc:
        count = len({a.envelope for a in (*message.to, *message.cc, *message.bcc)})
        failure = failed_result(message, exc)
        return SpooledRow(position, row, failure=failure, recipients=count)
    prepared = PreparedMessage.of(outgoing)
    return SpooledRow(position, row, prepared, recipients=prepared.recipient_count)


def missing_value(
    error: UndefinedVariableError, columns: tuple[str, ...] | None
) -> str:
    """Say why a row lacks a variable its template uses, in the file's terms.

    For a CSV file, a name missing from the header is the same mistake on every
    row, said the same way (so it can be said once): the column is missing.
    A name in the header lacks a value on this row only: its cell is empty.
    """
    variable = error.variable
    if columns is None or not variable.isidentifier():
        return str(error)
    used_by = error.template.split("/", 1)[-1]
    if variable not in columns:
        return f"column {variable!r} is used by {used_by} but is not in the header"
    return (
        f"column {variable!r} is empty on this row, and {used_by} uses it (write "
        f'{{{{ {variable} | default("...") }}}} in the template to allow it)'
    )
