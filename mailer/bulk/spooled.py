"""Render each row once: the check pass fills the spool, the send pass reads it.

``check_into_spool`` is the check pass of a batch whose client sends prepared
messages as they are (``MessageClient.accepts_prepared``): every row is
rendered and validated as before (a bad row still stops the batch before
anything is sent), and each valid row's message is prepared and spooled
(``mailer.bulk.spool``). ``SpoolSend`` is then the send pass without a
journal: it reads the spool in order and hands the prepared messages to the
client; nothing is rendered or serialised again. (With a journal, the walk of
``mailer.bulk.resume`` reads the spool the same way.)

Because the send pass reads the spool, not the recipients file, it cannot
compare rows: it watches the file instead (``CheckedRows.check_unchanged``),
and a file changed under the run stops it, the rest ``pending``, as when the
rows are read again.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

from mailer.bulk.checkpass import (
    Checked,
    RowRenderer,
    check_rows_in_order,
    spooled_row,
)
from mailer.bulk.identity import CheckedRows
from mailer.bulk.recipients import DuplicateRow, InvalidRow, Recipient
from mailer.bulk.spool import CHUNK_ROWS, ChunkWriter, Spool, SpooledRow
from mailer.content.message import Message
from mailer.delivery.prepare import Preparer
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.state import PreparedMessage
from mailer.delivery.telemetry import log_outcome
from mailer.exceptions import MailerError, RecipientsChangedError

# (position for the report's order, or -1; the row's line; what became of it)
SpoolOutcome = tuple[int, int, SendResult | InvalidRow]


def check_into_spool(
    job: RowRenderer,
    rows: Iterable[tuple[int, Recipient | InvalidRow]],
    checked: CheckedRows,
    spool: Spool,
    preparer: Preparer,
    *,
    columns: tuple[str, ...] | None = None,
    stop: asyncio.Event | None = None,
) -> Checked:
    """Check every row, and spool the prepared message of each valid one.

    Blocking (run it in a thread): the event loop stays free for signals.

    Args:
        job: Renders a row.
        rows: ``(position, row)`` in order.
        checked: Where each row's identity is recorded.
        spool: Where the messages go, ``CHUNK_ROWS`` valid rows a chunk.
        preparer: Serialises and signs each message.
        columns: A CSV file's header, for the wording of a missing variable.
        stop: Read between rows: a Ctrl-C ends a long check within one row.

    Raises:
        CheckInterruptedError: ``stop`` was set meanwhile.
    """
    writer: ChunkWriter | None = None
    in_chunk = 0

    def spool_it(position: int, row: Recipient, message: Message) -> None:
        nonlocal writer, in_chunk
        if writer is None or in_chunk == CHUNK_ROWS:
            if writer is not None:
                writer.close()
            writer, in_chunk = spool.writer(spool.chunks), 0
        writer.write(spooled_row(position, row, message, preparer))
        in_chunk += 1

    try:
        return check_rows_in_order(
            job.render, rows, checked, columns=columns, stop=stop, on_valid=spool_it
        )
    finally:
        if writer is not None:
            writer.close()


def spooled_message(
    spooled: SpooledRow,
    render: Callable[[Recipient], Message],
    checked: CheckedRows,
    dedupe: bool,
) -> PreparedMessage | Message | SendResult | InvalidRow:
    """Return a spooled row's message to send, or what became of a row not sent.

    The send pass's rule, in one process or in a sender: a repeat under
    ``dedupe`` is a DuplicateRow; a row that could not be prepared is its
    failure (logged now, as a send's outcome is); a row too large to spool is
    rendered now, as every row used to be (an InvalidRow if it no longer
    renders).
    """
    row = spooled.row
    if dedupe and checked.is_repeat(spooled.position):
        return DuplicateRow(row.line, row.email)
    if spooled.failure is not None:
        log_outcome(
            None,
            spooled.failure,
            relay=None,
            duration=0.0,
            recipients=spooled.recipients,
        )
        return spooled.failure
    if spooled.message is not None:
        return spooled.message
    try:
        return render(row)
    except MailerError as exc:
        return InvalidRow(row.line, str(exc))


class SpoolSend:
    """The send pass without a journal, from the spool: every row accounted for.

    A row the check pass found bad was reported then, and is not in the
    spool. Every spooled row ends with a result: sent or failed, failed
    unsent (it could not be prepared), skipped as a repeat (``dedupe``), or
    ``pending``: the batch was stopped before its turn.

    Args:
        job: Renders a row whose message was too large to spool.
        checked: The check pass's record (repeats, for ``dedupe``).
        spool: The prepared messages.
        dedupe: Skip the rows repeating an earlier row's address.
        stop: The batch's stop.
    """

    def __init__(
        self,
        job: RowRenderer,
        checked: CheckedRows,
        spool: Spool,
        *,
        dedupe: bool,
        stop: asyncio.Event | None,
    ) -> None:
        self.job = job
        self.checked = checked
        self.spool = spool
        self.dedupe = dedupe
        self.stop = stop
        # The client's index of each message in flight -> its row's position
        # (the report's order) and line. Rows settled without a message (a
        # failure, a repeat) take no index of the client's.
        self.lines: dict[int, tuple[int, int]] = {}
        self._sent = itertools.count()
        self._found: deque[SpoolOutcome] = deque()  # settled while reading
        self._rest: Iterator[SpooledRow] = spool.rows()
        self.changed: RecipientsChangedError | None = None

    def _halted(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def messages(self) -> Iterator[PreparedMessage | Message]:
        """Yield the messages to send, read from the spool as they are needed."""
        # A plain generator: the engine pulls it inline, no task per message.
        for spooled in self._rest:
            try:
                self.checked.check_unchanged()
            except RecipientsChangedError as exc:
                self.changed = exc  # no further message: the rest end pending
                self._rest = itertools.chain((spooled,), self._rest)
                return
            message = self._message(spooled)
            if message is not None:
                yield message
            if self._halted():
                return  # the rest is pending (rest())

    def _message(self, spooled: SpooledRow) -> PreparedMessage | Message | None:
        found = spooled_message(spooled, self.job.render, self.checked, self.dedupe)
        if isinstance(found, (PreparedMessage, Message)):
            self.lines[next(self._sent)] = (spooled.position, spooled.row.line)
            return found
        # A failure unsent keeps its place in the report; a repeat or a row
        # that no longer renders is listed with the bad rows.
        position = spooled.position if isinstance(found, SendResult) else -1
        self._found.append((position, spooled.row.line, found))
        return None

    def drain(self) -> Iterator[SpoolOutcome]:
        """Yield the rows settled while reading (failed unsent, repeated)."""
        while self._found:
            yield self._found.popleft()

    async def rest(self) -> AsyncIterator[SpoolOutcome]:
        """Yield ``pending`` for every row a stopped batch did not take."""
        if self.changed is not None:
            reason = f"not sent: {self.changed}"
        elif self._halted():
            reason = f"not sent: {getattr(self.stop, 'reason', 'interrupted')}"
        else:
            return
        for count, spooled in enumerate(self._rest, start=1):
            if count % 1000 == 0:
                await asyncio.sleep(0)  # a second Ctrl-C is heard meanwhile
            row = spooled.row
            if self.dedupe and self.checked.is_repeat(spooled.position):
                yield -1, row.line, DuplicateRow(row.line, row.email)
                continue
            pending = SendResult.of(
                SendStatus.PENDING,
                to=(row.email,),
                message_id=None,
                recipients={},
                refused={},
                error=reason,
                transient=True,
            )
            yield spooled.position, row.line, pending
