"""Mail(attachments=[...]) pairs matchers with attachments one to one, in any order.

Found by attacking the test kit: the pairing was greedy, so a broad matcher
listed first took the attachment a narrower one needed, and a message that
matches (a one-to-one pairing exists) was reported as not matching.
"""

from __future__ import annotations

from mailer import Message
from mailer.content.addresses import Address
from mailer.content.attachments import Attachment as FileAttachment
from mailer.records import SentMail
from mailer.testing import Attachment, Contains, Mail

SENDER = Address.parse("s@example.test", field="sender")


def sent(*files: tuple[str, bytes]) -> SentMail:
    """A received message carrying these files."""
    message = Message(
        to="a@example.test",
        subject="files",
        body="b",
        attachments=[FileAttachment(data, filename=name) for name, data in files],
    )
    return SentMail(envelope=message.envelope(SENDER), raw=message.to_bytes(SENDER))


def two_files() -> SentMail:
    """a.pdf (10 bytes) then b.pdf (20 bytes)."""
    return sent(("a.pdf", b"0123456789"), ("b.pdf", b"0123456789" * 2))


def test_a_broad_matcher_listed_first_leaves_the_narrow_one_its_file() -> None:
    """[size > 5, filename a.pdf] matches [a.pdf, b.pdf]: b.pdf for the broad one."""
    mail = two_files()
    assert mail == Mail(
        attachments=[Attachment(size=lambda n: n > 5), Attachment(filename="a.pdf")]
    )
    assert mail == Mail(
        attachments=[Attachment(filename=Contains(".pdf")), Attachment(size=10)]
    )


def test_a_pairing_that_does_not_exist_still_fails_and_says_which() -> None:
    """Two matchers that both need a.pdf: no one-to-one pairing, a clear miss."""
    expected = Mail(attachments=[Attachment(filename="a.pdf"), Attachment(size=10)])
    mail = two_files()
    assert mail != expected
    explanation = expected.explain(mail)
    assert explanation is not None
    assert "no attachment matches" in explanation


def test_three_way_pairing_is_found_whatever_the_order() -> None:
    """Every order of three overlapping matchers pairs off with three files."""
    mail = sent(("z.txt", b"333"), ("y.txt", b"22"), ("x.txt", b"1"))
    matchers = [
        Attachment(size=lambda n: n >= 1),
        Attachment(size=lambda n: n >= 2),
        Attachment(size=3),
    ]
    for first in range(3):
        for second in range(3):
            if second == first:
                continue
            third = 3 - first - second
            order = [matchers[first], matchers[second], matchers[third]]
            assert mail == Mail(attachments=order), order
