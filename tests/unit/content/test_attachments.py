"""Attachments: values, file names, encoding once, and the MIME tree they make."""

from __future__ import annotations

import email.policy
import hashlib
import io
from email.parser import BytesParser
from pathlib import Path

import pytest

from mailer import Message
from mailer.content.addresses import Address
from mailer.content.attachments import Attachment
from mailer.exceptions import HeaderInjectionError, MessageError
from mailer.records import SentMail

SENDER = Address.parse("sender@example.test", field="sender")


def tree(raw: bytes) -> list[str]:
    """Return the content types of every part, depth-first, indented by depth."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    shown: list[str] = []

    def walk(part: email.message.EmailMessage, depth: int) -> None:
        shown.append("  " * depth + part.get_content_type())
        if part.is_multipart():
            for child in part.iter_parts():
                walk(child, depth + 1)  # type: ignore[arg-type]

    walk(parsed, 0)
    return shown


def sent(message: Message) -> SentMail:
    return SentMail(envelope=message.envelope(SENDER), raw=message.to_bytes(SENDER))


PDF = Attachment(b"%PDF-1.7\n", filename="invoice.pdf")
LOGO = Attachment(
    b"\x89PNG\r\n\x1a\n",
    filename="logo.png",
    disposition="inline",
    content_id="logo@example.test",
)


class TestValue:
    def test_content_type_is_guessed_from_the_name(self) -> None:
        """Without content_type, the file name's extension decides it."""
        assert PDF.content_type == "application/pdf"
        assert Attachment(b"x", filename="data.unknownext").content_type == (
            "application/octet-stream"
        )

    def test_equal_by_value_and_immutable(self) -> None:
        """Two attachments made from the same values are equal; none can be changed."""
        assert Attachment(b"%PDF-1.7\n", filename="invoice.pdf") == PDF
        assert Attachment(b"other", filename="invoice.pdf") != PDF
        assert hash(Attachment(b"%PDF-1.7\n", filename="invoice.pdf")) == hash(PDF)
        with pytest.raises(AttributeError, match="immutable"):
            PDF.filename = "x.pdf"  # type: ignore[misc]

    def test_from_path_reads_when_serialised_not_when_made(
        self, tmp_path: Path
    ) -> None:
        """A path attachment reads the file at the first serialisation."""
        path = tmp_path / "report.csv"
        attachment = Attachment.from_path(path)  # the file does not exist yet
        assert attachment.filename == "report.csv"
        assert attachment.content_type == "text/csv"
        path.write_bytes(b"a,b\r\n1,2\n")
        mail = sent(
            Message(
                to="a@example.test", subject="s", body="b", attachments=[attachment]
            )
        )
        assert mail.attachments[0].content == b"a,b\r\n1,2\n"

    def test_from_path_missing_file_names_the_field(self, tmp_path: Path) -> None:
        """Serialising a message whose file is gone fails with attachment.path."""
        message = Message(
            to="a@example.test",
            subject="s",
            body="b",
            attachments=[Attachment.from_path(tmp_path / "gone.pdf")],
        )
        with pytest.raises(
            MessageError, match=r"^attachment\.path: cannot read .*gone\.pdf"
        ) as caught:
            message.to_bytes(SENDER)
        assert caught.value.field == "attachment.path"

    def test_from_file_reads_a_binary_file_object(self) -> None:
        """A binary file object is read at once; its name gives the file name."""
        handle = io.BytesIO(b"col\n")
        handle.name = "exports/rows.csv"  # type: ignore[attr-defined]
        attachment = Attachment.from_file(handle)
        assert (attachment.filename, attachment.read()) == ("rows.csv", b"col\n")

    def test_from_file_refuses_a_text_file(self) -> None:
        """A text-mode file is refused with a hint to open it with 'rb'."""
        with pytest.raises(MessageError, match="open it with 'rb'"):
            Attachment.from_file(io.StringIO("x"), filename="x.txt")  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("name", "error"),
        [
            ("a\r\nBcc: x@example.test.pdf", HeaderInjectionError),
            ("a\nb.pdf", HeaderInjectionError),
            ('a".pdf', MessageError),
            ("../etc/passwd", MessageError),
            ("a\\b.pdf", MessageError),
            ("nul\x00.pdf", HeaderInjectionError),
            ("", MessageError),
            ("..", MessageError),
            ("x" * 256, MessageError),
        ],
    )
    def test_hostile_filenames_are_refused_naming_the_field(
        self, name: str, error: type[MessageError]
    ) -> None:
        """CR, LF, quotes, slashes, backslashes and controls in a name are refused."""
        with pytest.raises(error, match=r"^attachment\.filename: ") as caught:
            Attachment(b"x", filename=name)
        assert caught.value.field == "attachment.filename"
        assert "\n" not in str(caught.value)

    def test_bad_content_type_and_content_id_are_refused(self) -> None:
        """A content type or Content-ID that could break the header is refused."""
        with pytest.raises(MessageError, match=r"^attachment\.content_type: "):
            Attachment(b"x", filename="a.bin", content_type="text/plain\r\nX: y")
        with pytest.raises(HeaderInjectionError, match=r"^attachment\.content_id: "):
            Attachment(b"x", filename="a.png", content_id="a b@c")
        with pytest.raises(MessageError, match=r"^attachment\.disposition: "):
            Attachment(b"x", filename="a.png", disposition="evil")  # type: ignore[arg-type]

    def test_duplicate_content_ids_are_refused(self) -> None:
        """Two parts of one message cannot share a Content-ID."""
        twin = Attachment(
            b"y", filename="b.png", disposition="inline", content_id="logo@example.test"
        )
        with pytest.raises(MessageError, match=r"^attachments\[1\]: Content-ID"):
            Message(
                to="a@example.test", subject="s", body="b", attachments=[LOGO, twin]
            )

    def test_non_attachment_items_are_refused(self) -> None:
        """A path or bytes given where an Attachment belongs is refused by index."""
        with pytest.raises(
            MessageError, match=r"^attachments\[0\]: expected an Attachment"
        ):
            Message(to="a@example.test", subject="s", body="b", attachments=["x.pdf"])  # type: ignore[list-item]


class TestEncoding:
    def test_non_ascii_filename_arrives_as_written(self) -> None:
        """A non-ASCII name goes out per RFC 2231 (and RFC 2047 in name=) and reads back."""
        name = "Rechnung März 2026 — Übersicht.pdf"
        mail = sent(
            Message(
                to="a@example.test",
                subject="s",
                body="b",
                attachments=[Attachment(b"x", filename=name)],
            )
        )
        assert mail.attachments[0].filename == name
        assert b"filename*=utf-8''Rechnung%20M%C3%A4rz" in mail.raw
        assert b'name="=?utf-8?' in mail.raw
        assert mail.raw.isascii()

    def test_long_non_ascii_filename_is_cut_into_rfc2231_pieces(self) -> None:
        """A long name is split into filename*0*, filename*1*...; lines stay short."""
        name = "請求書" * 60 + ".pdf"
        mail = sent(
            Message(
                to="a@example.test",
                subject="s",
                body="b",
                attachments=[Attachment(b"x", filename=name)],
            )
        )
        assert mail.attachments[0].filename == name
        assert b"filename*1*=" in mail.raw
        assert max(len(line) for line in mail.raw.split(b"\r\n")) <= 998

    def test_text_attachment_keeps_its_bytes_exactly(self) -> None:
        """Bare LF, CRLF, trailing spaces and no final newline survive (base64)."""
        data = b"line one  \nline two\r\nno final newline \x00"
        mail = sent(
            Message(
                to="a@example.test",
                subject="s",
                body="b",
                attachments=[Attachment(data, filename="notes.txt")],
            )
        )
        assert mail.attachments[0].content == data
        assert mail.attachments[0].content_type == "text/plain"
        assert b"Content-Transfer-Encoding: base64" in mail.raw

    def test_an_attachment_object_is_read_and_encoded_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Serialising 50 messages carrying one attachment reads and encodes it once."""
        path = tmp_path / "big.bin"
        path.write_bytes(bytes(range(256)) * 100)
        attachment = Attachment.from_path(path)
        reads = 0
        real = Attachment.read

        def counting(self: Attachment) -> bytes:
            nonlocal reads
            reads += 1
            return real(self)

        monkeypatch.setattr(Attachment, "read", counting)
        encoded = []
        for number in range(50):
            message = Message(
                to=f"r{number}@example.test",
                subject="s",
                body="b",
                attachments=[attachment],
            )
            encoded.append(message.to_bytes(SENDER))
        assert reads == 1
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert all(
            hashlib.sha256(sent_mail.attachments[0].content).hexdigest() == digest
            for sent_mail in (
                SentMail(envelope=message.envelope(SENDER), raw=raw)
                for raw in encoded[:3]
            )
        )


class TestTree:
    def test_text_only_stays_a_single_part(self) -> None:
        """No HTML and no attachments: a single text/plain part, as before."""
        assert tree(
            Message(to="a@example.test", subject="s", body="b").to_bytes(SENDER)
        ) == ["text/plain"]

    def test_text_and_attachment_is_mixed(self) -> None:
        """Text plus a file: multipart/mixed around text/plain and the file."""
        raw = Message(
            to="a@example.test", subject="s", body="b", attachments=[PDF]
        ).to_bytes(SENDER)
        assert tree(raw) == ["multipart/mixed", "  text/plain", "  application/pdf"]

    def test_html_and_inline_image_is_related(self) -> None:
        """HTML with an inline image: related around alternative and the image, no mixed."""
        raw = Message(
            to="a@example.test",
            subject="s",
            body="b",
            html='<img src="cid:logo@example.test">',
            attachments=[LOGO],
        ).to_bytes(SENDER)
        assert tree(raw) == [
            "multipart/related",
            "  multipart/alternative",
            "    text/plain",
            "    text/html",
            "  image/png",
        ]
        assert b'type="multipart/alternative"' in raw

    def test_everything_nests_mixed_related_alternative(self) -> None:
        """Text, HTML, inline images and files: mixed > related > alternative."""
        raw = Message(
            to="a@example.test",
            subject="s",
            body="b",
            html="<p>h</p>",
            attachments=[PDF, LOGO],
        ).to_bytes(SENDER)
        assert tree(raw) == [
            "multipart/mixed",
            "  multipart/related",
            "    multipart/alternative",
            "      text/plain",
            "      text/html",
            "    image/png",
            "  application/pdf",
        ]

    def test_inline_without_content_id_is_a_plain_attachment_part(self) -> None:
        """An inline part nobody can reference (no Content-ID) goes in mixed."""
        shown = Attachment(b"x", filename="photo.jpg", disposition="inline")
        raw = Message(
            to="a@example.test",
            subject="s",
            body="b",
            html="<p>h</p>",
            attachments=[shown],
        ).to_bytes(SENDER)
        assert tree(raw)[0] == "multipart/mixed"
        assert "multipart/related" not in "".join(tree(raw))


class TestSentMailAttachments:
    def test_inline_parts_are_listed_with_every_field(self) -> None:
        """SentMail.attachments lists inline parts too, with disposition, id and size."""
        mail = sent(
            Message(
                to="a@example.test",
                subject="s",
                body="b",
                html="<p/>",
                attachments=[PDF, LOGO],
            )
        )
        inline, pdf = mail.attachments  # document order: related comes first
        assert (
            inline.filename,
            inline.disposition,
            inline.content_id,
            inline.size,
        ) == (
            "logo.png",
            "inline",
            "logo@example.test",
            8,
        )
        assert (pdf.filename, pdf.content_type, pdf.disposition, pdf.content_id) == (
            "invoice.pdf",
            "application/pdf",
            "attachment",
            None,
        )
        assert pdf.content == b"%PDF-1.7\n"
