"""Message: validation at construction, value equality, and the MIME it builds."""

from __future__ import annotations

import email.policy
from email.parser import BytesParser

import pytest

from mailer import (
    Address,
    HeaderInjectionError,
    InvalidAddressError,
    Message,
    MessageError,
)

SENDER = Address.parse("Shop <shop@example.test>", field="sender")
PARSER = BytesParser(policy=email.policy.default)


def build(message: Message) -> bytes:
    return message.to_bytes(
        SENDER, message_id="<id-1@example.test>", date="Tue, 24 Nov 2026 10:00:00 +0000"
    )


def parse(message: Message) -> email.message.EmailMessage:
    return PARSER.parsebytes(build(message))


class TestEquality:
    def test_messages_with_the_same_fields_are_equal(self) -> None:
        """Two messages made from the same values compare equal and hash alike."""
        a = Message(to="ann@example.test", subject="Hi", body="Hello")
        b = Message(to=["ann@example.test"], subject="Hi", body="Hello")
        assert a == b
        assert hash(a) == hash(b)

    def test_a_different_field_makes_them_unequal(self) -> None:
        """Changing one field breaks equality."""
        a = Message(to="ann@example.test", subject="Hi", body="Hello")
        assert a != Message(to="ann@example.test", subject="Hi", body="Hello!")
        assert a != Message(
            to="ann@example.test", subject="Hi", body="Hello", bcc="b@example.test"
        )

    def test_comparing_with_another_type_is_not_implemented(self) -> None:
        """Equality with a non-Message returns NotImplemented (so == falls back)."""
        message = Message(to="ann@example.test", subject="Hi", body="Hello")
        assert message.__eq__("not a message") is NotImplemented
        assert message != "not a message"

    def test_message_is_immutable(self) -> None:
        """Fields cannot be reassigned after construction."""
        message = Message(to="ann@example.test", subject="Hi", body="Hello")
        with pytest.raises(AttributeError):
            message.subject = "changed"  # type: ignore[misc]

    def test_building_assigns_a_fresh_message_id_without_changing_the_value(
        self,
    ) -> None:
        """Message-ID and Date are set when built, so equality is unaffected."""
        message = Message(to="ann@example.test", subject="Hi", body="Hello")
        first = PARSER.parsebytes(message.to_bytes(SENDER))
        second = PARSER.parsebytes(message.to_bytes(SENDER))
        assert first["Message-ID"] != second["Message-ID"]
        assert first["Message-ID"].startswith("<")
        assert first["Message-ID"].endswith("@example.test>")
        assert first["Date"] is not None
        assert message == Message(to="ann@example.test", subject="Hi", body="Hello")


class TestAddressValidation:
    @pytest.mark.parametrize(
        "address",
        [
            "ann@example.test",
            "ann@example.com",
            "dev@localhost",
            "dev@mail.localhost",
            "Ann Example <ann@example.test>",
            '"Doe, John" <john@example.test>',
            "<ann@example.test>",
        ],
    )
    def test_accepts_valid_and_reserved_test_addresses(self, address: str) -> None:
        """Reserved test domains (example.*, *.test, localhost) are accepted."""
        message = Message(to=address, subject="s", body="b")
        assert message.to[0].envelope.endswith(
            address.rstrip(">").rsplit("@", 1)[1].lower()
        )

    @pytest.mark.parametrize(
        ("address", "reason"),
        [
            ("not-an-address", "@-sign"),
            ("ann@", "after the @"),
            ("@example.test", "before the @"),
            ("ann@@example.test", "one address per entry"),
            ("A <a@example.test>, b@example.test", "one address per entry"),
            ("a@example.test; b@example.test", "one address per entry"),
            ("ann@example.invalid", "special-use"),
        ],
    )
    def test_rejects_malformed_addresses_naming_the_field(
        self, address: str, reason: str
    ) -> None:
        """A malformed address raises InvalidAddressError naming the field."""
        with pytest.raises(InvalidAddressError, match=reason) as caught:
            Message(
                to="ok@example.test",
                cc=["fine@example.test", address],
                subject="s",
                body="b",
            )
        assert caught.value.field == "cc[1]"
        assert str(caught.value).startswith("cc[1]: ")

    @pytest.mark.parametrize(
        "address",
        [
            "a\r\nb@example.test",
            "a@example.test\r\nRCPT TO:<e@x.test>",
            "a\x00@example.test",
            "a\t@example.test",
        ],
    )
    def test_rejects_control_characters_in_addresses(self, address: str) -> None:
        """CR, LF, NUL and TAB in an address are refused, never stripped."""
        with pytest.raises(HeaderInjectionError) as caught:
            Message(to=address, subject="s", body="b")
        assert caught.value.field == "to"

    def test_rejects_control_characters_in_a_display_name(self) -> None:
        """A newline hidden in a display name is refused."""
        with pytest.raises(HeaderInjectionError, match="reply_to"):
            Message(
                to="a@example.test",
                reply_to="Evil\nBcc: x@example.test <a@example.test>",
                subject="s",
                body="b",
            )

    def test_requires_a_recipient(self) -> None:
        """An empty To is an error naming `to`."""
        with pytest.raises(MessageError, match="^to: at least one recipient"):
            Message(to=[], subject="s", body="b")

    def test_idn_domain_goes_out_as_ascii(self) -> None:
        """An internationalised domain becomes its IDNA A-label on the envelope."""
        message = Message(to="Jörg <joerg@münchen.example>", subject="s", body="b")
        assert message.to[0].envelope == "joerg@xn--mnchen-3ya.example"
        assert message.envelope(SENDER).smtputf8 is False

    def test_non_ascii_local_part_needs_smtputf8(self) -> None:
        """A non-ASCII local part marks the envelope as needing SMTPUTF8."""
        message = Message(to="josé@example.test", subject="s", body="b")
        assert message.envelope(SENDER).smtputf8 is True


class TestHeaderValidation:
    @pytest.mark.parametrize(
        "subject",
        [
            "Hello\r\nBcc: victim@example.test",
            "a\nb",
            "a\rb",
            "a\x00b",
            "a\u2028b",
            "tab\there",
        ],
    )
    def test_rejects_control_characters_in_the_subject(self, subject: str) -> None:
        """CR, LF, NUL, TAB and Unicode line separators in a subject are refused."""
        with pytest.raises(HeaderInjectionError) as caught:
            Message(to="a@example.test", subject=subject, body="b")
        assert caught.value.field == "subject"

    def test_rejects_an_encoded_word_that_hides_a_newline(self) -> None:
        """CVE-2024-6923: an RFC 2047 word decoding to a newline is refused."""
        with pytest.raises(HeaderInjectionError, match="encoded word"):
            Message(
                to="a@example.test", subject="=?utf-8?q?a=0AX-Injected:_yes?=", body="b"
            )

    def test_custom_header_values_are_checked(self) -> None:
        """A custom header with a newline is refused, naming the header."""
        with pytest.raises(HeaderInjectionError) as caught:
            Message(
                to="a@example.test",
                subject="s",
                body="b",
                headers={"X-Tag": "a\r\nX-Evil: 1"},
            )
        assert caught.value.field == "headers['X-Tag']"

    @pytest.mark.parametrize("name", ["Bad Name", "X:Colon", "", "Ünïcode"])
    def test_rejects_invalid_header_names(self, name: str) -> None:
        """Header names must be printable ASCII without spaces or colons."""
        with pytest.raises(HeaderInjectionError, match="invalid header name"):
            Message(to="a@example.test", subject="s", body="b", headers={name: "v"})

    @pytest.mark.parametrize("name", ["Bcc", "subject", "Content-Type", "Message-ID"])
    def test_rejects_headers_that_fields_own(self, name: str) -> None:
        """Headers the message builds itself cannot be set by hand."""
        with pytest.raises(MessageError, match="through the message's own field"):
            Message(to="a@example.test", subject="s", body="b", headers={name: "v"})

    def test_text_that_merely_looks_encoded_arrives_literally(self) -> None:
        """A subject containing '=?...?=' text is encoded so it is not decoded."""
        subject = "literal =?utf-8?q?caf=C3=A9?= stays"
        parsed = parse(Message(to="a@example.test", subject=subject, body="b"))
        assert parsed["Subject"] == subject


class TestMimeStructure:
    def test_text_only_is_a_single_text_plain_part(self) -> None:
        """Without HTML the message is text/plain, UTF-8."""
        parsed = parse(Message(to="a@example.test", subject="s", body="Hello\n"))
        assert parsed.get_content_type() == "text/plain"
        assert parsed.get_content_charset() == "utf-8"
        assert parsed.get_content() == "Hello\r\n"

    def test_text_and_html_make_multipart_alternative(self) -> None:
        """With HTML the message is multipart/alternative: text first, then HTML."""
        parsed = parse(
            Message(to="a@example.test", subject="s", body="Hi\n", html="<p>Hi</p>\n")
        )
        assert parsed.get_content_type() == "multipart/alternative"
        parts = list(parsed.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        assert parts[1].get_content() == "<p>Hi</p>\r\n"

    def test_bcc_is_on_the_envelope_and_not_in_the_headers(self) -> None:
        """Bcc recipients get RCPT TO but never appear in the message."""
        message = Message(
            to="a@example.test",
            cc="c@example.test",
            bcc="secret@example.test",
            subject="s",
            body="b",
        )
        raw = build(message)
        assert b"secret" not in raw
        assert message.envelope(SENDER).rcpt_tos == (
            "a@example.test",
            "c@example.test",
            "secret@example.test",
        )

    def test_envelope_recipients_are_deduplicated(self) -> None:
        """An address in To and Bcc gets one RCPT TO."""
        message = Message(
            to="a@example.test",
            bcc=["a@example.test", "b@example.test"],
            subject="s",
            body="b",
        )
        assert message.envelope(SENDER).rcpt_tos == ("a@example.test", "b@example.test")

    def test_sender_override_is_the_from_and_mail_from(self) -> None:
        """A message's own sender replaces the configured default."""
        message = Message(
            to="a@example.test", sender="Ops <ops@example.test>", subject="s", body="b"
        )
        assert parse(message)["From"] == "Ops <ops@example.test>"
        assert message.envelope(SENDER).mail_from == "ops@example.test"

    def test_custom_headers_are_written(self) -> None:
        """Extra headers go out in order with their values."""
        parsed = parse(
            Message(
                to="a@example.test",
                subject="s",
                body="b",
                headers={
                    "X-Campaign": "spring",
                    "List-Unsubscribe": "<mailto:u@example.test>",
                },
            )
        )
        assert parsed["X-Campaign"] == "spring"
        assert parsed["List-Unsubscribe"] == "<mailto:u@example.test>"

    def test_to_email_message_returns_what_would_be_sent(self) -> None:
        """to_email_message parses the exact bytes: get_body works on it."""
        email_message = Message(
            to="a@example.test", subject="s", body="text", html="<b>html</b>"
        ).to_email_message(SENDER)
        plain = email_message.get_body(("plain",))
        assert plain is not None
        assert plain.get_content() == "text"

    def test_every_line_ends_with_crlf(self) -> None:
        """No bare CR or LF reaches the wire, whatever the input line ends."""
        raw = build(
            Message(to="a@example.test", subject="s", body="a\nb\rc\r\nd", html="x\ny")
        )
        assert b"\n" not in raw.replace(b"\r\n", b"")
        assert b"\r" not in raw.replace(b"\r\n", b"")


class TestNonAsciiRoundTrip:
    """Python 3.11's email package mishandles spaces around encoded words (gh-92081).

    Our own header writer must make non-ASCII subjects and names arrive exactly.
    """

    NAMES = (
        "Client 062 李雷",
        "李雷 Client 062",
        "Zoë Ünïcode",
        "Grüße aus München, lieber Kunde",
        "Dear customer number 062 of our shop 李雷 and 韩梅梅 too",
        "Ann 李雷 Lee",
    )

    @pytest.mark.parametrize("text", NAMES)
    def test_subject_arrives_exactly(self, text: str) -> None:
        """A non-ASCII subject decodes to exactly what was written."""
        assert (
            parse(Message(to="a@example.test", subject=text, body="b"))["Subject"]
            == text
        )

    @pytest.mark.parametrize("name", NAMES)
    def test_display_name_arrives_exactly(self, name: str) -> None:
        """A non-ASCII display name decodes to exactly what was written."""
        parsed = parse(
            Message(
                to=Address.create("a@example.test", name, field="to"),
                subject="s",
                body="b",
            )
        )
        assert parsed["To"].addresses[0].display_name == name

    def test_the_stdlib_generator_would_have_broken_one_of_these(self) -> None:
        """The bug we work around is real here: EmailMessage mangles a long name."""
        from email.headerregistry import Address as StdAddress
        from email.message import EmailMessage

        name = "Client 062 李雷 Client 062 李雷 Client 062 李雷 Client 062 李雷"
        stdlib = EmailMessage(policy=email.policy.SMTP)
        stdlib["To"] = StdAddress(display_name=name, addr_spec="a@example.test")
        stdlib.set_content("b")
        mangled = PARSER.parsebytes(stdlib.as_bytes())["To"].addresses[0].display_name
        ours = parse(
            Message(
                to=Address.create("a@example.test", name, field="to"),
                subject="s",
                body="b",
            )
        )
        assert mangled != name
        assert ours["To"].addresses[0].display_name == name


class TestBodies:
    def test_lines_over_998_octets_are_encoded(self) -> None:
        """A 5,000-character line is transfer-encoded; no wire line exceeds 998."""
        body = "x" * 5000 + "\nshort line\n"
        raw = build(
            Message(
                to="a@example.test",
                subject="s",
                body=body,
                html="<p>" + "y" * 3000 + "</p>",
            )
        )
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998
        parsed = PARSER.parsebytes(raw)
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == body

    @pytest.mark.parametrize(
        "body",
        [
            "no final newline",
            "trailing space ",
            "",
            "ends\n\n",
            "ü no newline",
            "日本語の本文",
        ],
    )
    def test_body_arrives_exactly_including_its_end(self, body: str) -> None:
        """Text bodies round-trip exactly, final newline or not."""
        parsed = parse(Message(to="a@example.test", subject="s", body=body))
        assert parsed.get_content().replace("\r\n", "\n") == body

    @pytest.mark.parametrize(
        "body", [".\n..\n.leading dot\n", "a\r\n.\r\nb", "a\n.\nb"]
    )
    def test_dot_lines_are_kept_for_the_transport_to_stuff(self, body: str) -> None:
        """Lines starting with '.' stay in the content (dot-stuffing is the wire's job)."""
        parsed = parse(
            Message(to="a@example.test", subject="s", body=body, html="<p>x</p>")
        )
        assert parsed.get_body(("plain",)).get_content().replace(
            "\r\n", "\n"
        ) == body.replace("\r\n", "\n")
