"""encode_text_body, made faster, writes the same bytes as before for any text.

A resumed batch rebuilds its messages from the journal and must get the same
bytes (a DKIM signature covers them), also across an upgrade: the encoding of
a body may not change. The reference below is the implementation this one
replaced (main 2e2ccdf), kept verbatim as the oracle.
"""

from __future__ import annotations

import base64
import binascii
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.content import mime

_CONTROL_IN_BODY = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NON_ASCII_BYTES = bytes(range(0x80, 0x100))


def _reference(text: str, *, final_newline_is_free: bool) -> tuple[str, bytes]:
    """Encode ``text`` as encode_text_body did before it was made faster."""
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = normal.split("\n")
    ends_cleanly = final_newline_is_free or not normal or normal.endswith("\n")
    if (
        normal.isascii()
        and ends_cleanly
        and max(map(len, lines)) <= 998
        and not _CONTROL_IN_BODY.search(normal)
    ):
        return "7bit", "\r\n".join(lines).encode("ascii")
    raw = normal.encode("utf-8")
    non_ascii = len(raw) - len(raw.translate(None, _NON_ASCII_BYTES))
    if non_ascii * 4 > len(raw):
        encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
        return "base64", encoded if not final_newline_is_free else encoded[:-2]
    encoded = binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False)
    encoded = encoded.replace(b"\n", b"\r\n")
    if not final_newline_is_free and not encoded.endswith(b"\r\n"):
        encoded += b"=\r\n"
    return "quoted-printable", encoded


PIECES = [
    "\n",
    "\r\n",
    "\r",
    "\t",
    " ",
    ".",
    "\x00",
    "\x07",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x1f",
    "\x7f",
    "\x80",
    "é",
    "日本",
    "😀",
    "=",
    "=_",
    "From ",
    "x" * 997,
    "x" * 998,
    "x" * 999,
]
bodies = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(max_size=20)), max_size=12
).map("".join)


@settings(max_examples=600, deadline=None)
@given(text=bodies, free=st.booleans())
def test_any_body_is_encoded_as_before(text: str, free: bool) -> None:
    """Random bodies (controls, CR/LF mixes, long lines, Unicode): the same bytes."""
    assert mime.encode_text_body(text, final_newline_is_free=free) == _reference(
        text, final_newline_is_free=free
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "plain\n",
        "no final newline",
        "a\r\nb\rc\n",
        "tab\there\n",
        "bell\x07\n",
        "del\x7f\n",
        "x" * 998 + "\n",
        "x" * 999 + "\n",
        ("y" * 500 + "\n") * 3,
        "y" * 500 + "\r\n" + "z" * 499,
        "Grüße\n",
        "日本語のテキスト\n",
    ],
)
@pytest.mark.parametrize("free", [True, False])
def test_the_edges_of_7bit_are_encoded_as_before(text: str, free: bool) -> None:
    """Line lengths 998/999, controls, bare CR, no final newline: the same bytes."""
    assert mime.encode_text_body(text, final_newline_is_free=free) == _reference(
        text, final_newline_is_free=free
    )
