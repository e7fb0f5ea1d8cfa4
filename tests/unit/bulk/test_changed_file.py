"""A recipients file rewritten in place while a batch runs: nothing lost, nothing torn.

The file is real; the transport is a MockTransport whose handler rewrites the
file while the first messages are being delivered, as an editor or a script
would. The send pass reads rows lazily (about a hundred ahead of the sends),
so the later rows are read after the change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from mailer import (
    InvalidRow,
    MessageClient,
    RecipientFile,
    SendStatus,
    send_messages,
)
from mailer.bulk.status import journal_status
from mailer.config.settings import MailerSettings
from mailer.testing import SentMail
from mailer.transports import MockTransport

ROWS = 250
HEADER = "email,name,customer_id,plan\n"


def original(n: int) -> str:
    return f"user{n}@example.test,User {n},C-{n},pro\n"


def write_rows(path: Path, lines: list[str]) -> None:
    # In place: the same inode, truncated and rewritten (what `>` in a shell
    # or most scripts do), not a new file renamed over the old one.
    with path.open("r+", encoding="utf-8") as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(HEADER + "".join(lines))


@pytest.fixture
def recipients(tmp_path: Path) -> Path:
    """A CSV of 250 rows."""
    path = tmp_path / "recipients.csv"
    path.write_text(HEADER + "".join(original(n) for n in range(ROWS)))
    return path


@pytest.fixture
def delivered() -> Iterator[
    tuple[list[SentMail], Callable[[Callable[[], None]], None]]
]:
    """What the batch's client delivers, and a way to act at the first delivery."""
    outbox: list[SentMail] = []
    actions: list[Callable[[], None]] = []

    def deliver(mail: SentMail) -> None:
        outbox.append(mail)
        while actions:
            actions.pop()()

    def client(settings: MailerSettings) -> MessageClient:
        return MessageClient(settings, transport=MockTransport(deliver))

    with patch("mailer.bulk.sending.generate_message_client", side_effect=client):
        yield outbox, actions.append


def rewrite_dropping_row_3(path: Path) -> Callable[[], None]:
    """Delete one early row and change one address: every later row shifts."""

    def rewrite() -> None:
        lines = [original(n) for n in range(ROWS) if n != 3]
        lines[200] = "someone.else@example.test,Someone Else,C-X,pro\n"
        write_rows(path, lines)

    return rewrite


def torn_rewrite(path: Path) -> Callable[[], None]:
    """Shift every row by a few bytes so that the reader's offset lands mid-row."""

    def rewrite() -> None:
        write_rows(path, [original(n).replace("user", "u") for n in range(ROWS)])

    return rewrite


ORIGINAL = {f"user{n}@example.test" for n in range(ROWS)}


@pytest.mark.parametrize("change", [rewrite_dropping_row_3, torn_rewrite])
async def test_a_plain_batch_stops_at_the_change_and_every_row_has_a_result(
    settings: MailerSettings,
    recipients: Path,
    delivered: tuple[list[SentMail], Callable[[Callable[[], None]], None]],
    change: Callable[[Path], Callable[[], None]],
) -> None:
    """No journal: only checked rows are sent; the rest end pending, none dropped."""
    outbox, at_first_delivery = delivered
    at_first_delivery(change(recipients))
    report = await send_messages(
        "welcome", RecipientFile(recipients), settings=settings
    )
    sent_to = {mail.to[0] for mail in outbox}
    assert sent_to <= ORIGINAL  # nothing to a torn or new address
    assert report.total == ROWS  # every row accounted for
    assert report.sent == len(outbox) < ROWS
    assert report.pending == ROWS - report.sent
    assert report.invalid == 0
    pending = [r for r in report.results if r.status is SendStatus.PENDING]
    assert "recipients.csv changed while the batch was running" in str(pending[0].error)
    assert not report.ok


@pytest.mark.parametrize("change", [rewrite_dropping_row_3, torn_rewrite])
async def test_a_journaled_batch_never_records_a_row_under_another_entry(
    settings: MailerSettings,
    recipients: Path,
    tmp_path: Path,
    delivered: tuple[list[SentMail], Callable[[Callable[[], None]], None]],
    change: Callable[[Path], Callable[[], None]],
) -> None:
    """Journal: each 'sent' entry's address got its mail; the rest stay pending."""
    outbox, at_first_delivery = delivered
    journal = tmp_path / "batch.journal"
    at_first_delivery(change(recipients))
    report = await send_messages(
        "welcome", RecipientFile(recipients), settings=settings, journal=journal
    )
    sent_to = [mail.to[0] for mail in outbox]
    assert set(sent_to) <= ORIGINAL
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        states = dict(db.execute("SELECT email, state FROM messages"))
    recorded_sent = {email for email, state in states.items() if state == "sent"}
    assert recorded_sent == set(sent_to)  # marked sent = mailed, one to one
    assert report.total == ROWS
    assert report.pending == ROWS - len(sent_to) > 0
    status = journal_status(journal)
    assert not status.is_complete
    pending = [r for r in report.results if r.status is SendStatus.PENDING]
    assert "put the file back as it was to resume it" in str(pending[-1].error)

    # Put back, the file resumes: each address mailed exactly once.
    write_rows(recipients, [original(n) for n in range(ROWS)])
    report = await send_messages(
        "welcome", RecipientFile(recipients), settings=settings, journal=journal
    )
    assert report.sent == ROWS
    assert sorted(mail.to[0] for mail in outbox) == sorted(ORIGINAL)


async def test_a_change_before_the_journal_is_filled_sends_nothing(
    settings: MailerSettings,
    recipients: Path,
    tmp_path: Path,
    delivered: tuple[list[SentMail], Callable[[Callable[[], None]], None]],
) -> None:
    """Changed between the check pass and the journal's creation: refused, empty."""
    outbox, _ = delivered
    journal = tmp_path / "batch.journal"
    source = RecipientFile(recipients)
    checked = iter([True])

    def change_after_check(*args: Any, **kwargs: Any) -> Any:
        if next(checked, False):
            rewrite_dropping_row_3(recipients)()
        return real_replay(*args, **kwargs)

    from mailer.bulk.identity import CheckedRows

    real_replay = CheckedRows.replay
    with (
        patch.object(CheckedRows, "replay", change_after_check),
        pytest.raises(Exception, match="changed while the batch was running"),
    ):
        await send_messages("welcome", source, settings=settings, journal=journal)
    assert outbox == []
    write_rows(recipients, [original(n) for n in range(ROWS)])
    report = await send_messages("welcome", source, settings=settings, journal=journal)
    assert (report.sent, report.resumed) == (ROWS, None)  # a fresh journal


async def test_a_row_that_no_longer_renders_in_the_send_pass_is_reported(
    settings: MailerSettings,
    recipients: Path,
    tmp_path: Path,
    delivered: tuple[list[SentMail], Callable[[Callable[[], None]], None]],
) -> None:
    """Rendered in the check pass, failing in the send pass: a result, not a gap."""
    from mailer.bulk import sending
    from mailer.exceptions import MessageError

    renders: dict[str, int] = {}
    real = sending.render_row

    def second_render_of_user7_fails(template: str, row: Any, **kw: Any) -> Any:
        renders[row.email] = renders.get(row.email, 0) + 1
        if row.email == "user7@example.test" and renders[row.email] > 1:
            raise MessageError("attachment: invoice-7.pdf is gone", field="attachment")
        return real(template, row, **kw)

    for journal in (None, tmp_path / "batch.journal"):
        renders.clear()
        with patch.object(sending, "render_row", second_render_of_user7_fails):
            report = await send_messages(
                "welcome", RecipientFile(recipients), settings=settings, journal=journal
            )
        assert report.total == ROWS
        assert report.sent == ROWS - 1
        if journal is None:
            assert report.invalid_rows == [
                InvalidRow(9, "attachment: invoice-7.pdf is gone")
            ]
        else:
            [failed] = [r for r in report.results if r.status is SendStatus.FAILED]
            assert failed.to == ("user7@example.test",)
            assert failed.transient  # a resume tries it again
            status = journal_status(journal)
            assert [e.email for e in status.failures] == ["user7@example.test"]
