"""The stored form of a queued message: a faithful, validating round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailer import HeaderInjectionError, Message
from mailer.content.addresses import Address
from mailer.queue.codec import FIELDS, decode_message, encode_message, message_fields

SHOP = Address.parse("Example Shop <shop@example.test>", field="sender")


def full_message() -> Message:
    return Message(
        to=["Zoë Ärger <zoe@example.test>", "bob@example.test"],
        cc="Carol <carol@example.test>",
        bcc="audit@example.test",
        reply_to="Help <help@example.test>",
        subject="Your order №42 ✓",
        body="Thanks\nline two",
        html="<p>Thanks</p>",
        headers={"X-Order": "42", "List-Unsubscribe": "<mailto:u@example.test>"},
    )


def test_a_message_round_trips_to_an_equal_message_with_its_sender_set() -> None:
    """Every field survives; a message without sender gets the default one stored."""
    message = full_message()
    decoded = decode_message(encode_message(message, sender=SHOP))
    assert decoded.sender == SHOP
    assert decoded == Message(
        to=message.to,
        cc=message.cc,
        bcc=message.bcc,
        reply_to=message.reply_to,
        subject=message.subject,
        body=message.body,
        html=message.html,
        headers=message.headers,
        sender=SHOP,
    )


def test_a_message_s_own_sender_wins_over_the_default() -> None:
    """The stored sender is the message's own when it has one."""
    message = Message(
        to="a@example.test", subject="s", body="b", sender="Own <own@example.test>"
    )
    assert decode_message(encode_message(message, sender=SHOP)).sender == message.sender


def test_the_codec_covers_every_message_field() -> None:
    """A field added to Message must be stored too, or queued mail would lose it."""
    assert set(FIELDS) == set(message_fields())


def test_a_row_edited_to_inject_a_header_is_refused_on_decoding() -> None:
    """Decoding validates again: CRLF in a stored subject raises, naming the field."""
    data = encode_message(full_message(), sender=SHOP)
    data["subject"] = "Hi\r\nBcc: victim@example.test"
    with pytest.raises(HeaderInjectionError, match="subject"):
        decode_message(data)


def test_an_unknown_format_version_is_refused() -> None:
    """A row written by another codec version is not guessed at."""
    data = encode_message(full_message(), sender=SHOP)
    data["v"] = 2
    with pytest.raises(ValueError, match="format 2 is not known"):
        decode_message(data)


def test_importing_mailer_or_the_queue_api_loads_no_database_library() -> None:
    """psycopg and procrastinate load when the queue is used, not on import."""
    import subprocess
    import sys

    code = (
        "import sys, mailer\n"
        "print('mailer.queue' in sys.modules)\n"
        "import mailer.queue, mailer.testing\n"
        "print(sorted(m for m in ('psycopg', 'procrastinate', 'mailer.queue.tasks')"
        " if m in sys.modules))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert output == ["False", "[]"]


def test_attachments_and_unsubscribe_round_trip_with_their_bytes(
    tmp_path: Path,
) -> None:
    """A file attachment is stored as its bytes (a worker elsewhere has no path)."""
    from mailer import Attachment

    invoice = tmp_path / "invoice.pdf"
    invoice.write_bytes(b"%PDF-1.7 \x00\xff binary")
    message = Message(
        to="a@example.test",
        subject="Invoice",
        body="Attached.",
        html='<p><img src="cid:logo@example.test"></p>',
        attachments=[
            Attachment.from_path(invoice),
            Attachment(
                b"\x89PNG",
                filename="logo.png",
                disposition="inline",
                content_id="logo@example.test",
            ),
        ],
        unsubscribe="https://example.test/unsubscribe?u=1",
    )
    data = encode_message(message, sender=SHOP)
    invoice.unlink()
    decoded = decode_message(json.loads(json.dumps(data)))
    assert [a.read() for a in decoded.attachments] == [
        b"%PDF-1.7 \x00\xff binary",
        b"\x89PNG",
    ]
    assert [(a.filename, a.disposition, a.content_id) for a in decoded.attachments] == [
        ("invoice.pdf", "attachment", None),
        ("logo.png", "inline", "logo@example.test"),
    ]
    assert decoded.unsubscribe == message.unsubscribe
