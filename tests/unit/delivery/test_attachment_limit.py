"""A file over MAILER_MAX_MESSAGE_SIZE is refused before it is read (no sockets).

Found by attacking the size limit from the Python API: a 400 MB file attached
with Attachment.from_path was read, base64-encoded (and signed, with DKIM) and
only then refused: 2.4 GB of memory to say "too large".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailer import Attachment, MailerSettings, Message, MessageClient, SendStatus
from mailer.exceptions import MessageError
from mailer.testing import MemoryTransport

MAX_SIZE = 1_000_000


@pytest.fixture
def huge_file(tmp_path: Path) -> Path:
    """A 200 MB file that takes no disk (sparse)."""
    path = tmp_path / "huge.bin"
    with path.open("wb") as handle:
        handle.truncate(200_000_000)
    return path


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Attachment]:
    """Record every attachment whose bytes are read."""
    seen: list[Attachment] = []
    real = Attachment.read

    def counting(self: Attachment) -> bytes:
        seen.append(self)
        return real(self)

    monkeypatch.setattr(Attachment, "read", counting)
    return seen


async def test_a_file_over_the_limit_is_never_read(
    huge_file: Path,
    reads: list[Attachment],
    make_settings: Callable[..., MailerSettings],
) -> None:
    """client.send: MessageError naming MAILER_MAX_MESSAGE_SIZE, the file unread."""
    settings = make_settings(max_message_size=MAX_SIZE)
    transport = MemoryTransport()
    message = Message(
        to="ann@example.test",
        subject="s",
        body="b",
        attachments=[Attachment.from_path(huge_file)],
    )
    async with MessageClient(settings, transport=transport) as client:
        with pytest.raises(MessageError, match="MAILER_MAX_MESSAGE_SIZE") as caught:
            await client.send(message)
    assert caught.value.field == "size"
    assert reads == []
    assert transport.outbox == []


async def test_in_a_batch_it_fails_that_message_alone(
    huge_file: Path,
    tmp_path: Path,
    reads: list[Attachment],
    make_settings: Callable[..., MailerSettings],
) -> None:
    """send_many: that message fails (unread), the one beside it is sent."""
    small = tmp_path / "small.pdf"
    small.write_bytes(b"%PDF-1 small")
    settings = make_settings(max_message_size=MAX_SIZE)
    transport = MemoryTransport()
    messages = [
        Message(to=f"{name}@example.test", subject="s", body="b", attachments=[file])
        for name, file in [
            ("ann", Attachment.from_path(huge_file)),
            ("bob", Attachment.from_path(small)),
        ]
    ]
    async with MessageClient(settings, transport=transport) as client:
        results = await client.send_many(messages)
    assert [r.status for r in results] == [SendStatus.FAILED, SendStatus.SENT]
    assert "MAILER_MAX_MESSAGE_SIZE" in (results[0].error or "")
    assert [a.path for a in reads] == [small]
    assert [m.to for m in transport.outbox] == [("bob@example.test",)]
