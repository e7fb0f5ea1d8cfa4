"""The Attachment matcher, alone and inside Mail(attachments=[...])."""

from __future__ import annotations

from mailer import Message
from mailer.content.addresses import Address
from mailer.content.attachments import Attachment as FileAttachment
from mailer.records import SentMail
from mailer.testing import Attachment, Contains, Mail

SENDER = Address.parse("s@example.test", field="sender")
MESSAGE = Message(
    to="a@example.test",
    subject="Invoice",
    body="See attached.",
    html='<img src="cid:logo@example.test">',
    attachments=[
        FileAttachment(b"%PDF-1.7 data", filename="invoice.pdf"),
        FileAttachment(
            b"PNG",
            filename="logo.png",
            disposition="inline",
            content_id="logo@example.test",
        ),
    ],
)
MAIL = SentMail(envelope=MESSAGE.envelope(SENDER), raw=MESSAGE.to_bytes(SENDER))


def test_fields_may_be_values_or_matchers() -> None:
    """Each field is compared as a value, a matcher or a callable."""
    pdf = next(a for a in MAIL.attachments if a.filename == "invoice.pdf")
    assert pdf == Attachment(filename="invoice.pdf", content_type="application/pdf")
    assert pdf == Attachment(filename=Contains(".pdf"), size=lambda n: n < 100)
    assert pdf == Attachment(content=b"%PDF-1.7 data", disposition="attachment")
    assert pdf != Attachment(filename="invoice.pdf", size=1)


def test_explain_names_the_differing_field() -> None:
    """A miss says which field differed and what it was."""
    pdf = MAIL.attachments[-1]
    assert (
        Attachment(filename="invoice.pdf", size=1).explain(pdf)
        == "size: wanted 1, got 13"
    )


def test_mail_matches_attachments_in_any_order() -> None:
    """Mail(attachments=[...]) pairs matchers off one to one, in any order."""
    assert (
        Mail(
            attachments=[
                Attachment(filename="invoice.pdf"),
                Attachment(content_id="logo@example.test", disposition="inline"),
            ]
        )
        == MAIL
    )
    assert Mail(attachments=[Attachment(filename="invoice.pdf")]) != MAIL
    miss = Mail(
        attachments=[Attachment(filename="x.pdf"), Attachment(filename="logo.png")]
    )
    assert "attachments: no attachment matches Attachment(filename='x.pdf')" in (
        miss.explain(MAIL) or ""
    )


def test_mail_matches_a_message_before_it_is_sent() -> None:
    """A mocked send receives a Message: its attachments match the same way."""
    assert (
        Mail(attachments=[Attachment(filename="logo.png", size=3), "invoice.pdf"])
        == MESSAGE
    )
