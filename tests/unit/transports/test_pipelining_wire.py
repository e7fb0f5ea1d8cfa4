"""The bytes the pipelined path writes: dot-stuffed content and command groups."""

from __future__ import annotations

import re

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.content.message import Envelope
from mailer.transports.smtp.pipelining import envelope_commands, wire_content

content_pieces = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b".", b"..", b"\r\n.\r\n", b".\r\n", b"x", b"\xc3\xa9"]
)
contents = st.lists(st.one_of(content_pieces, st.binary(max_size=20)), max_size=20).map(
    b"".join
)


def server_reads(wire: bytes) -> bytes:
    """Undo the transfer as a server does (RFC 5321 4.5.2): strip the end, unstuff."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    body = wire[: -len(b".\r\n")]
    return b"".join(
        line[1:] if line.startswith(b".") else line
        for line in body.splitlines(keepends=True)
    )


@settings(max_examples=300, deadline=None)
@given(content=contents)
def test_content_goes_out_exactly_as_aiosmtplib_data_sends_it(content: bytes) -> None:
    """wire_content matches aiosmtplib's own DATA framing, byte for byte."""
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(content))
    assert wire_content(content) == expected + b".\r\n"


@settings(max_examples=300, deadline=None)
@given(content=contents)
def test_a_server_reads_back_the_content_with_crlf_line_ends(content: bytes) -> None:
    """Unstuffed by the server, the content is the input with CRLF line ends."""
    wire = wire_content(content)
    assert b"\r\n.\r\n" not in wire[:-3]  # the only end-of-data line is the last
    normal = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if not normal.endswith(b"\r\n"):
        normal += b"\r\n"
    assert server_reads(wire) == normal


def test_an_envelope_group_is_mail_rcpts_and_data() -> None:
    """MAIL FROM with its options, one RCPT TO per recipient, then DATA."""
    envelope = Envelope("shop@example.test", ("a@example.test", "b@example.test"))
    assert envelope_commands(envelope, ["SIZE=120", "BODY=8BITMIME"], "ascii") == (
        b"MAIL FROM:<shop@example.test> SIZE=120 BODY=8BITMIME\r\n"
        b"RCPT TO:<a@example.test>\r\n"
        b"RCPT TO:<b@example.test>\r\n"
        b"DATA\r\n"
    )


def test_smtputf8_addresses_are_written_in_utf8() -> None:
    """With SMTPUTF8 a non-ASCII local part goes out as UTF-8."""
    envelope = Envelope("shop@example.test", ("zoë@example.test",), smtputf8=True)
    group = envelope_commands(envelope, ["SMTPUTF8"], "utf-8")
    assert "RCPT TO:<zoë@example.test>\r\n".encode() in group


@pytest.mark.parametrize("bad", ["a\r\nRCPT TO:<x@evil.test>@example.test", "a\x00@x"])
def test_a_control_character_never_reaches_the_wire(bad: str) -> None:
    """A control character in an address is refused (the last line of defence)."""
    with pytest.raises(ValueError, match="control character"):
        envelope_commands(Envelope("shop@example.test", (bad,)), [], "ascii")
