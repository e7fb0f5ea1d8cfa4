"""Enqueueing refuses a file over MAILER_MAX_MESSAGE_SIZE before reading it (unit).

Found by attacking the queue: ``send_later`` serialised the message (reading and
base64-encoding every attachment) and only then compared its size with the
limit, so a 400 MB file cost gigabytes of memory to be told "too large". The
SMTP path already checked the attachments' sizes first
(``mailer.delivery.limits.check_attachment_limits``); enqueueing now does too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailer import Attachment, MailerSettings, Message
from mailer.exceptions import MessageError
from mailer.queue import enqueue, send_later
from mailer.testing import FakeQueue

MAX_SIZE = 1_000_000


@pytest.fixture
def huge_file(tmp_path: Path) -> Path:
    """A 400 MB file that takes no disk (sparse)."""
    path = tmp_path / "huge.bin"
    with path.open("wb") as handle:
        handle.truncate(400_000_000)
    return path


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Attachment]:
    """Record every attachment whose bytes are read (or MIME-encoded)."""
    seen: list[Attachment] = []
    real_read = Attachment.read
    real_part = Attachment.mime_part

    def counting_read(self: Attachment) -> bytes:
        seen.append(self)
        return real_read(self)

    def counting_part(self: Attachment) -> tuple[bytes, bytes]:
        seen.append(self)
        return real_part(self)

    monkeypatch.setattr(Attachment, "read", counting_read)
    monkeypatch.setattr(Attachment, "mime_part", counting_part)
    return seen


def with_file(path: Path) -> Message:
    """Return a receipt carrying ``path``."""
    return Message(
        to="ann@example.test",
        subject="Your invoice",
        body="Attached.",
        attachments=[Attachment.from_path(path)],
    )


def test_prepare_refuses_the_file_from_its_size_without_reading_it(
    huge_file: Path,
    reads: list[Attachment],
    make_settings: Callable[..., MailerSettings],
) -> None:
    """prepare(): MessageError on field 'size', naming the setting; nothing read."""
    settings = make_settings(max_message_size=MAX_SIZE)
    with pytest.raises(MessageError, match="MAILER_MAX_MESSAGE_SIZE") as caught:
        enqueue.prepare(with_file(huge_file), settings)
    assert caught.value.field == "size"
    assert "\n" not in str(caught.value)
    assert reads == []


async def test_send_later_refuses_it_before_recording_anything(
    huge_file: Path,
    reads: list[Attachment],
    mail_queue: FakeQueue,
    make_settings: Callable[..., MailerSettings],
) -> None:
    """send_later (fake queue): refused unread, nothing enqueued."""
    settings = make_settings(max_message_size=MAX_SIZE)
    with pytest.raises(
        MessageError, match=r"^size: the attachments are 547,368,422 bytes"
    ):
        await send_later(with_file(huge_file), settings=settings)
    assert reads == []
    mail_queue.assert_nothing_enqueued()


async def test_send_later_without_a_queue_refuses_it_before_any_connection(
    huge_file: Path,
    reads: list[Attachment],
    make_settings: Callable[..., MailerSettings],
) -> None:
    """The size error comes first, not the missing MAILER_QUEUE_DSN; nothing read."""
    settings = make_settings(max_message_size=MAX_SIZE)
    assert settings.queue_dsn is None
    with pytest.raises(MessageError, match="MAILER_MAX_MESSAGE_SIZE"):
        await send_later(with_file(huge_file), settings=settings)
    assert reads == []


def test_a_file_within_the_limit_is_still_enqueued_with_its_bytes(
    tmp_path: Path, make_settings: Callable[..., MailerSettings]
) -> None:
    """The check does not refuse what fits: the stored form carries the file."""
    small = tmp_path / "invoice.pdf"
    small.write_bytes(b"%PDF-1.7 invoice")
    prepared = enqueue.prepare(
        with_file(small), make_settings(max_message_size=MAX_SIZE)
    )
    [stored] = prepared.encoded["attachments"]
    assert stored["filename"] == "invoice.pdf"
