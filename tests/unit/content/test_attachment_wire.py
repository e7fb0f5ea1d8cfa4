"""Attachments as a strict receiver parses them: names and attached messages (no sockets).

Found by attacking the content layer: a file name that looks like an RFC 2047
encoded word arrived decoded (``../etc/x``, even with CR LF), past the checks
on the name as written; an ``.eml`` file went out as base64 message/rfc822,
which RFC 2046 forbids and Python's parser reads as a broken message with no
attachment at all.
"""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from mailer import Attachment, Message
from mailer.content import mime
from mailer.content.addresses import Address
from mailer.content.message import Envelope
from mailer.content.serialize import serialize_message
from mailer.exceptions import MessageError
from mailer.records import SentMail

SENDER = Address.parse("shop@example.test", field="from")
FORWARDED = (
    b"From: Ann <ann@example.test>\r\n"
    b"To: bob@example.test\r\n"
    b"Subject: the original\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"original text\r\n"
    b"--inner\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename=inner.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0=\r\n"
    b"--inner--\r\n"
)


def sent(*attachments: Attachment, message_id: str | None = None) -> SentMail:
    """Serialise a message with these attachments and read it back."""
    message = Message(
        to="bob@example.test", subject="s", body="text", attachments=attachments
    )
    raw = serialize_message(message, SENDER, message_id=message_id).content
    return SentMail(Envelope("shop@example.test", ("bob@example.test",)), raw)


def strictly_parsed(raw: bytes) -> email.message.EmailMessage:
    """Parse with email.policy.strict (raises on the first defect); check each part."""
    parsed = email.message_from_bytes(raw, policy=email.policy.strict)
    assert isinstance(parsed, email.message.EmailMessage)
    for part in parsed.walk():
        assert not part.defects, part.defects
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    return parsed


@pytest.mark.parametrize(
    "filename",
    [
        "=?utf-8?q?=2E=2E=2F=2E=2E=2Fetc=2Fcron.d=2Fx?=",
        "=?utf-8?b?Li4vYQ0KQmNjOiB4QHkK?=",
        "report =?utf-8?q?x?= final.pdf",
        "=?" + "a" * 70 + "?=.txt",
    ],
)
def test_a_filename_that_looks_like_an_encoded_word_arrives_as_written(
    filename: str,
) -> None:
    """A name holding "=?" is never decoded by the receiver into another name."""
    mail = sent(Attachment(b"data", filename=filename))
    [attachment] = mail.attachments
    assert attachment.filename == filename
    [part] = [p for p in strictly_parsed(mail.raw).walk() if p.get_filename()]
    assert part.get_filename() == filename
    assert part["content-type"].params["name"] == filename


def test_an_eml_file_goes_as_a_plain_file_byte_for_byte() -> None:
    """A guessed .eml (LF line ends here) is application/octet-stream, exact, valid."""
    saved = FORWARDED.replace(b"\r\n", b"\n")
    attachment = Attachment(saved, filename="forwarded.eml")
    assert attachment.content_type == "application/octet-stream"
    mail = sent(attachment)
    strictly_parsed(mail.raw)
    [received] = mail.attachments
    assert (received.filename, received.content) == ("forwarded.eml", saved)


def test_a_message_rfc822_attachment_goes_as_it_is_and_is_one_attachment() -> None:
    """content_type='message/rfc822': sent 7bit (RFC 2046 5.2.1), read back exact."""
    attachment = Attachment(
        FORWARDED, filename="forwarded.eml", content_type="message/rfc822"
    )
    mail = sent(attachment)
    parsed = strictly_parsed(mail.raw)
    [part] = [p for p in parsed.walk() if p.get_content_type() == "message/rfc822"]
    assert part["content-transfer-encoding"] == "7bit"
    # The forwarded message's own parts are not this message's attachments.
    assert [(a.filename, a.content_type) for a in mail.attachments] == [
        ("forwarded.eml", "message/rfc822")
    ]
    assert mail.attachments[0].content == FORWARDED


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (FORWARDED.replace(b"\r\n", b"\n"), "line ends"),
        (FORWARDED.replace(b"original", "orïginal".encode()), "8-bit"),
        (FORWARDED.replace(b"original text", b"x" * 1200), "998"),
    ],
)
def test_message_rfc822_content_that_cannot_go_as_it_is_is_refused(
    content: bytes, problem: str
) -> None:
    """Such content cannot be a message/rfc822 part: an error names the field."""
    with pytest.raises(MessageError, match=problem) as caught:
        Attachment(content, filename="f.eml", content_type="message/rfc822")
    assert caught.value.field == "attachment.content_type"


@pytest.mark.parametrize(
    "content_type", ["multipart/mixed", "Multipart/Related", "message/partial"]
)
def test_container_types_are_refused_for_a_file(content_type: str) -> None:
    """A multipart or (other) message type for a file is an error, not a broken tree."""
    with pytest.raises(MessageError, match="cannot be sent as an attachment"):
        Attachment(b"x", filename="x.bin", content_type=content_type)


def test_a_boundary_inside_an_attached_message_is_avoided() -> None:
    """The outer boundary never occurs in the attached message, sent as it is."""
    message_id = "<fixed@example.test>"
    first_choice = mime.new_boundary(seed=f"{message_id}/mixed")
    hostile = FORWARDED.replace(b"original text", b"--" + first_choice.encode() + b"--")
    mail = sent(
        Attachment(hostile, filename="f.eml", content_type="message/rfc822"),
        message_id=message_id,
    )
    boundary = re.search(rb'boundary="([^"]+)"', mail.raw)
    assert boundary is not None
    assert boundary.group(1).decode() != first_choice
    strictly_parsed(mail.raw)
    assert [a.content for a in mail.attachments] == [hostile]
