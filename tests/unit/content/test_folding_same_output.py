"""fold and unstructured_tokens, made faster, give what they gave before.

The references are the implementations they replaced (main 2e2ccdf), kept
verbatim: a resumed message must be rebuilt with the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.content import mime


def _reference_fold(name: str, tokens: Sequence[str]) -> str:
    """Fold as fold() did before its one-line shortcut."""
    lines: list[str] = []
    line = f"{name}:"
    has_value = False
    for token in tokens:
        if has_value and len(line) + 1 + len(token) > 78:
            lines.append(line)
            line = ""
        line += " " + token
        has_value = True
    if not has_value:
        line += " "
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _reference_unstructured(value: str, *, name: str) -> list[str]:
    """Tokenise as unstructured_tokens() did before (with its word-length test)."""
    if not value:
        return []
    if (
        mime._PLAIN_TEXT.fullmatch(value)
        and "=?" not in value
        and len(name) + 2 + len(value) <= 998
        and max(map(len, value.split(" "))) <= 998 - len(name) - 2
    ):
        return value.split(" ")
    return mime.encoded_words(value, first_budget=78 - len(name) - 2)


names = st.sampled_from(["To", "Subject", "X-A-Rather-Long-Header-Name", "N" * 80])
tokens = st.lists(
    st.one_of(
        st.sampled_from(
            ["a", "", "x" * 70, "y" * 78, "z" * 200, "<ann@example.test>,"]
        ),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
    ),
    max_size=10,
)


@settings(max_examples=600, deadline=None)
@given(name=names, pieces=tokens)
def test_fold_writes_what_it_wrote_before(name: str, pieces: list[str]) -> None:
    """Any header name and tokens (none, long, empty): the same field text."""
    assert mime.fold(name, pieces) == _reference_fold(name, pieces)


@pytest.mark.parametrize("length", [76, 77, 78, 79, 80])
def test_fold_at_the_edge_of_one_line(length: int) -> None:
    """Fields of 76 to 80 characters fold exactly where they did."""
    pieces = ["w" * (length - len("Subj: ") - len(" tail")), "tail"]
    assert len(f"Subj: {' '.join(pieces)}") == length
    assert mime.fold("Subj", pieces) == _reference_fold("Subj", pieces)


words = st.lists(
    st.one_of(
        st.sampled_from(["", " ", "Zoë", "=?", "x" * 990, "x" * 996, "plain"]),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=15),
    ),
    max_size=6,
).map(" ".join)


@settings(max_examples=600, deadline=None)
@given(name=names, value=words)
def test_unstructured_tokens_are_what_they_were(name: str, value: str) -> None:
    """Subjects and header values up to and past 998 octets: the same tokens."""
    assert mime.unstructured_tokens(value, name=name) == _reference_unstructured(
        value, name=name
    )
