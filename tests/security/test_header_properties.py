"""Properties: any header text is either refused by our validation or arrives as exactly one identical header.

Each test keeps one SMTPTestServer (aiosmtpd) and one client (one pooled connection)
for all its examples, so a few hundred real SMTP transactions take about a
second. Examples mix arbitrary Unicode with the pieces attacks are made of
(CR, LF, encoded-word delimiters, specials, Unicode line breaks).
"""

from __future__ import annotations

import asyncio
import email.errors
import email.header
import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailer import Address, Message, MessageClient, MessageError
from mailer.testing import SentMail
from mailer.testing.server.server import SMTPTestServer

pytestmark = pytest.mark.integration

EXAMPLES = settings(max_examples=150, deadline=None, database=None)

PIECES = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\t",
    "\x0b",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    " ",
    "  ",
    "=?",
    "?=",
    "=?utf-8?q?",
    "=?utf-8?b?",
    "=?iso-8859-1?q?",
    "=0A",
    "=0D",
    "_",
    ":",
    "X-Injected: yes",
    "Bcc: evil@example.test",
    "é",
    "李",
    "😀",
    '"',
    "\\",
    "<",
    ">",
    ",",
    "@",
    "(",
    ")",
    ";",
    ".",
    "a",
    "Z",
    "0",
]
attack_text = st.one_of(
    st.text(max_size=120),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=25).map(
        "".join
    ),
)
header_names = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z"),
    st.sampled_from(["Subject", "bcc", "Received", "X Y", "X:Y", "Content-Type"]),
)


def has_control(text: str) -> bool:
    return any(
        unicodedata.category(char) in {"Cc", "Cs"} or char in "\u2028\u2029"
        for char in text
    )


def refusal_is_justified(value: str) -> bool:
    """Whether the value holds a control character, also after RFC 2047 decoding."""
    if has_control(value):
        return True
    try:
        decoded = str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return False
    return has_control(decoded)


@contextmanager
def one_server() -> Iterator[Callable[[Message], SentMail]]:
    """Run a real test server and a client for a whole test; yield send-and-receive."""
    with asyncio.Runner() as runner:
        server = runner.run(SMTPTestServer().start())
        client = MessageClient(server.settings(from_="shop@example.test"))

        def deliver(message: Message) -> SentMail:
            before = len(server.outbox)
            runner.run(client.send(message))
            assert len(server.outbox) == before + 1
            return server.outbox.last

        try:
            yield deliver
        finally:
            runner.run(client.aclose())
            runner.run(server.stop())


EXPECTED_HEADERS = {
    "from", "to", "subject", "date", "message-id", "mime-version",
    "content-type", "content-transfer-encoding",
}  # fmt: skip


def header_names_of(mail: SentMail) -> list[str]:
    return [name.lower() for name in mail.message]


def test_any_subject_is_refused_or_arrives_as_one_identical_subject() -> None:
    """Subject: a MessageError for text with a control character, else exactly that subject."""
    with one_server() as deliver:

        @EXAMPLES
        @given(value=attack_text)
        @example(value="=??B?00000?=")  # found here: raised email's HeaderParseError
        def check(value: str) -> None:
            try:
                message = Message(to="a@example.test", subject=value, body="b")
            except MessageError:
                assert refusal_is_justified(value)
                return
            mail = deliver(message)
            assert mail.message.get_all("Subject") == [value]
            assert sorted(header_names_of(mail)) == sorted(EXPECTED_HEADERS)

        check()


def test_any_custom_header_value_is_refused_or_arrives_as_one_identical_header() -> (
    None
):
    """X-Tag: a MessageError for text with a control character, else exactly one X-Tag with that value."""
    with one_server() as deliver:

        @EXAMPLES
        @given(value=attack_text)
        def check(value: str) -> None:
            try:
                message = Message(
                    to="a@example.test", subject="s", body="b", headers={"X-Tag": value}
                )
            except MessageError:
                assert refusal_is_justified(value)
                return
            mail = deliver(message)
            assert mail.message.get_all("X-Tag") == [value]
            assert sorted(header_names_of(mail)) == sorted({*EXPECTED_HEADERS, "x-tag"})

        check()


def test_any_display_name_is_refused_or_arrives_exactly() -> None:
    """To's display name: refused for a control character, else the same name and address arrive."""
    with one_server() as deliver:

        @EXAMPLES
        @given(name=attack_text)
        # Found by this test: split encoded words gained a space; a run of
        # spaces inside an encoded word came back as one; C1 controls passed.
        @example(name="株式会社サンプルシステムズジャパン営業部")
        @example(name="00000" + "\x80" * 9 + "\u0800" + "\U00010000" * 5)
        @example(name="=?  ")
        def check(name: str) -> None:
            try:
                address = Address.create("ann@example.test", name, field="to")
                message = Message(to=address, subject="s", body="b")
            except MessageError:
                assert refusal_is_justified(name)
                return
            # The one normalisation, documented on Address: space runs are one space.
            assert address.display_name == re.sub(" +", " ", name)
            mail = deliver(message)
            [to_header] = mail.message.get_all("To")
            [mailbox] = to_header.addresses
            assert (mailbox.display_name, mailbox.addr_spec) == (
                address.display_name,
                "ann@example.test",
            )
            assert mail.envelope.rcpt_tos == ("ann@example.test",)
            assert sorted(header_names_of(mail)) == sorted(EXPECTED_HEADERS)

        check()


def test_any_header_name_is_refused_or_arrives_as_exactly_one_header() -> None:
    """A custom header name is refused (invalid or reserved) or arrives once, unchanged."""
    with one_server() as deliver:

        @EXAMPLES
        @given(name=header_names)
        def check(name: str) -> None:
            try:
                message = Message(
                    to="a@example.test", subject="s", body="b", headers={name: "v"}
                )
            except MessageError:
                printable = name and all(
                    "\x21" <= c <= "\x7e" and c != ":" for c in name
                )
                assert not printable or name.lower() in EXPECTED_HEADERS | {
                    "bcc",
                    "cc",
                    "reply-to",
                }
                return
            mail = deliver(message)
            assert mail.message.get_all(name) == ["v"]
            assert [n for n in mail.message if n == name] == [name]

        check()
