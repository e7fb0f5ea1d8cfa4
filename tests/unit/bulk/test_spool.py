"""The spool between the check pass and the send pass, and the seams that bypass it."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest.mock import AsyncMock, patch

import pytest

import mailer.bulk.sending as sending
import mailer.bulk.spool as spool_module
from mailer import (
    ConfigError,
    Message,
    MessageClient,
    RecipientFile,
    Reply,
    SendResult,
    SendStatus,
    send_messages,
    stream_messages,
)
from mailer.bulk.identity import FileWatch
from mailer.bulk.recipients import Recipient
from mailer.bulk.spool import Spool, SpooledRow, read_chunk
from mailer.config.settings import MailerSettings
from mailer.content.message import Envelope
from mailer.delivery.state import PreparedMessage
from mailer.testing import Outbox, use_transport
from mailer.transports import MemoryTransport

ROWS = [
    {"email": f"user{n}@example.test", "name": f"User {n}", "customer_id": f"C-{n}"}
    | {"plan": "pro"}
    for n in range(12)
]


@pytest.fixture
def settings(make_settings: Callable[..., MailerSettings]) -> MailerSettings:
    """Settings for a batch in this process (no worker processes)."""
    return make_settings(workers=1)


@pytest.fixture
def outbox() -> Iterator[Outbox]:
    """Every client the factory makes delivers into this outbox (no socket)."""
    box = Outbox()
    with use_transport(lambda _: MemoryTransport(box)):
        yield box


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the system's temporary folder a fresh one, to see the spool in it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def prepared_row(position: int, size: int = 100) -> SpooledRow:
    row = Recipient(position + 1, f"u{position}@example.test", "U", {"plan": "pro"})
    message = PreparedMessage(
        Envelope("shop@example.test", (row.email,)),
        b"x" * size,
        f"<{position}@example.test>",
        "Mon, 07 Dec 2026 21:00:00 +0000",
        (row.email,),
    )
    return SpooledRow(position, row, message, recipients=1)


def test_a_spooled_row_reads_back_equal(tmp_path: Path) -> None:
    """A row and its prepared message come back from a chunk file as they went in."""
    written = [prepared_row(1), SpooledRow(2, Recipient(3, "b@example.test"))]
    with Spool(tmp_path) as spool:
        with spool.writer(0) as writer:
            for item in written:
                writer.write(item)
        assert list(read_chunk(spool.chunk_path(0), remove=False)) == written
        assert list(spool.rows()) == written
        assert not spool.chunk_path(0).exists()  # read once, then deleted


def test_the_spool_is_private_and_removed_on_close(tmp_path: Path) -> None:
    """The folder is 0700, each chunk 0600, and close removes them all."""
    spool = Spool(tmp_path)
    with spool.writer(0) as writer:
        writer.write(prepared_row(1))
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(spool.chunk_path(0).stat().st_mode) == 0o600
    spool.close()
    assert not spool.path.exists()


def test_a_message_over_the_size_limit_is_spooled_as_its_row(tmp_path: Path) -> None:
    """A message larger than SPOOLED_SIZE_LIMIT is kept as its row only, to render again."""
    big = prepared_row(1, size=spool_module.SPOOLED_SIZE_LIMIT + 1)
    with Spool(tmp_path) as spool:
        with spool.writer(0) as writer:
            writer.write(big)
        (back,) = spool.rows()
    assert back.message is None
    assert back.row == big.row


async def test_a_batch_renders_each_row_once_and_leaves_no_spool(
    settings: MailerSettings,
    outbox: Outbox,
    spool_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """12 rows: 12 renders (the check pass's), 12 messages, no spool folder left."""
    calls: list[str] = []
    render = sending.render_set

    def counted(*args: object, **kwargs: object) -> Message:
        calls.append("render")
        return render(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sending, "render_set", counted)
    report = await send_messages("welcome", ROWS, settings=settings)
    assert report.sent == 12
    assert len(outbox) == 12
    assert len(calls) == 12
    assert [r.to for r in report.results] == [(row["email"],) for row in ROWS]
    assert not [p for p in os.listdir(spool_dir) if p.startswith("mailer-spool-")]


async def test_rows_too_large_to_spool_are_rendered_again_at_their_turn(
    settings: MailerSettings,
    outbox: Outbox,
    spool_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a spool limit under every message's size, each row is rendered twice and sent once."""
    calls: list[str] = []
    render = sending.render_set

    def counted(*args: object, **kwargs: object) -> Message:
        calls.append("render")
        return render(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sending, "render_set", counted)
    monkeypatch.setattr(spool_module, "SPOOLED_SIZE_LIMIT", 10)
    report = await send_messages("welcome", ROWS, settings=settings)
    assert report.sent == 12
    assert sorted(m.envelope.rcpt_tos[0] for m in outbox) == sorted(
        row["email"] for row in ROWS
    )
    assert len(calls) == 24


def sent_result(message: Message) -> SendResult:
    return SendResult(
        status=SendStatus.SENT,
        to=tuple(a.addr_spec for a in message.to),
        message_id="<fake@example.test>",
        accepted=tuple(a.addr_spec for a in message.to),
        reply=Reply(250, "2.0.0 OK"),
    )


async def test_a_replaced_send_still_sees_each_message_as_a_message(
    settings: MailerSettings, outbox: Outbox
) -> None:
    """MessageClient.send patched on the class: it is awaited with a Message per row."""
    mock = AsyncMock(side_effect=sent_result)
    with patch.object(MessageClient, "send", mock):
        report = await send_messages("welcome", ROWS, settings=settings)
    assert report.sent == 12
    assert mock.await_count == 12
    messages = [c.args[0] for c in mock.await_args_list]
    assert all(isinstance(m, Message) for m in messages)
    assert [m.to[0].addr_spec for m in messages] == [row["email"] for row in ROWS]
    assert len(outbox) == 0  # the mock sent them


def test_a_client_takes_prepared_messages_only_when_nothing_must_see_them(
    settings: MailerSettings,
) -> None:
    """accepts_prepared: true for a plain client, false once send is replaced."""
    client = MessageClient(settings, transport=MemoryTransport())
    assert client.accepts_prepared
    client.send = AsyncMock(side_effect=sent_result)  # type: ignore[method-assign]
    assert not client.accepts_prepared


async def test_an_unwritable_temporary_folder_is_one_error_naming_tmpdir(
    settings: MailerSettings,
    outbox: Outbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No such TMPDIR: ConfigError naming TMPDIR and what to do, nothing sent."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as raised:
        await send_messages("welcome", ROWS, settings=settings)
    assert raised.value.key == "TMPDIR"
    assert "set TMPDIR to another folder" in str(raised.value)
    assert len(outbox) == 0


async def test_a_full_disk_while_spooling_is_one_error_and_leaves_no_spool(
    settings: MailerSettings,
    outbox: Outbox,
    spool_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC while writing the spool: ConfigError naming TMPDIR, nothing sent, no folder left."""

    def full(self: object, spooled: SpooledRow) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.ChunkWriter, "write", full)
    with pytest.raises(ConfigError) as raised:
        await send_messages("welcome", ROWS, settings=settings)
    assert raised.value.key == "TMPDIR"
    assert "No space left on device" in str(raised.value)
    assert len(outbox) == 0
    assert not [p for p in os.listdir(spool_dir) if p.startswith("mailer-spool-")]


def test_the_file_watch_names_each_kind_of_change(tmp_path: Path) -> None:
    """Unchanged: nothing; written to, replaced, removed: each said as such."""
    path = tmp_path / "recipients.csv"
    path.write_text("email\na@example.test\n", encoding="utf-8")
    watch = FileWatch(path)
    assert watch.change() is None
    with path.open("a", encoding="utf-8") as handle:
        handle.write("b@example.test\n")
    assert watch.change() == "it was written to since the check began"
    other = tmp_path / "other.csv"
    other.write_text("email\na@example.test\n", encoding="utf-8")
    watch = FileWatch(path)
    os.replace(other, path)
    assert watch.change() == "it was replaced by another file"
    path.unlink()
    assert watch.change() == "it can no longer be read"


@pytest.mark.parametrize("journaled", [False, True], ids=["plain", "journal"])
async def test_a_file_changed_after_the_check_sends_nothing_more(
    settings: MailerSettings,
    outbox: Outbox,
    tmp_path: Path,
    journaled: bool,
) -> None:
    """Edited between the check and the send: no spooled message goes, each row pending."""
    path = tmp_path / "recipients.csv"
    path.write_text(
        "email,name,customer_id\n"
        + "".join(f"u{n}@example.test,U,C-{n}\n" for n in range(5)),
        encoding="utf-8",
    )

    def edit(_: object) -> None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write("late@example.test,L,C-9\n")

    outcomes = [
        outcome
        async for _, outcome in stream_messages(
            "welcome",
            RecipientFile(path),
            settings=settings,
            context={"plan": "pro"},
            on_checked=edit,
            journal=tmp_path / "batch.journal" if journaled else None,
        )
    ]
    assert len(outbox) == 0
    assert [getattr(x, "status", None) for x in outcomes] == [SendStatus.PENDING] * 5
    assert all(
        "recipients.csv changed while the batch was running: it was written to"
        in str(getattr(x, "error", ""))
        for x in outcomes
    )


async def test_a_row_that_cannot_be_prepared_fails_and_the_next_rows_keep_their_lines(
    make_settings: Callable[..., MailerSettings], outbox: Outbox
) -> None:
    """Row 3 over MAILER_MAX_MESSAGE_SIZE fails unsent; every other row is sent, in order."""
    rows = [dict(row) for row in ROWS]
    rows[3]["customer_id"] = "C" * 40_000
    settings = make_settings(workers=1, max_message_size=30_000)
    report = await send_messages("welcome", rows, settings=settings)
    assert [r.to for r in report.results] == [(row["email"],) for row in ROWS]
    assert [r.status for r in report.results] == [SendStatus.SENT] * 3 + [
        SendStatus.FAILED
    ] + [SendStatus.SENT] * 8
    assert report.results[3].attempts == 0
    assert len(outbox) == 11
