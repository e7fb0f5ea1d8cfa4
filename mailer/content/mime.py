"""Write wire-ready header and body pieces: RFC 5322 folding, RFC 2047, MIME.

We do not use the standard library's generator, for three reasons measured on
Python 3.11.7: it drops or adds spaces around encoded words (gh-92081), it can emit
a newline hidden in an encoded word as a real header line (CVE-2024-6923), and it
costs ~2.6 ms a message. Everything here writes ASCII (UTF-8 only in addresses
whose local part needs SMTPUTF8), CRLF line ends, and lines of at most 998 octets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence

from mailer.content.addresses import Address

CRLF = "\r\n"
# RFC 5322 2.1.1: lines SHOULD be at most 78 characters and MUST be at most 998.
SOFT_LINE_LIMIT = 78
HARD_LINE_LIMIT = 998
# RFC 2047 2: an encoded word is at most 75 characters.
ENCODED_WORD_LIMIT = 75
# Room for a display name's single encoded word: the line also holds the field
# name, the address (up to 254 octets) in angle brackets and a comma.
PHRASE_WORD_LIMIT = HARD_LINE_LIMIT - 280
_Q_PREFIX = "=?utf-8?q?"
_B_PREFIX = "=?utf-8?b?"
_EW_OVERHEAD = len(_Q_PREFIX) + len("?=")

# Characters a Q-encoded word may carry unescaped in any header context
# (RFC 2047 5(3), the strictest rule: phrases).
_Q_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/"
)
# Printable ASCII words separated by single spaces: written as they are.
_PLAIN_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
# RFC 5322 atoms separated by single spaces: a display name needing no quotes.
_ATOMS = re.compile(
    r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
)
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def _q_char(char: str) -> str:
    if char in _Q_SAFE:
        return char
    if char == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in char.encode("utf-8"))


class _QTable(dict[int, str]):
    """Each character's Q encoding, for ``str.translate``, made when first met."""

    def __missing__(self, code: int) -> str:
        encoded = self[code] = _q_char(chr(code))
        return encoded


_Q_TABLE = _QTable()


def encoded_words(text: str, *, first_budget: int = ENCODED_WORD_LIMIT) -> list[str]:
    """Encode ``text`` as RFC 2047 UTF-8 words that decode back to it exactly.

    Words split only between characters, never inside a UTF-8 sequence. Q
    encoding is used when it is shorter than B (mostly Latin text), B otherwise.

    Args:
        text: Any text.
        first_budget: Room for the first word (the header name takes some of
            the first line); later words get the full 75 characters.

    Returns:
        The encoded words, in order; adjacent words are meant to be joined by
        folding white space, which decoders ignore between encoded words.
    """
    raw = text.encode("utf-8")
    b_length = 4 * ((len(raw) + 2) // 3)
    budget = max(first_budget, _EW_OVERHEAD + 12) - _EW_OVERHEAD
    # Most text (a name, a subject) fits one Q word: encode it in one call.
    q_text = text.translate(_Q_TABLE)
    if len(q_text) <= b_length and len(q_text) <= budget:
        return [_Q_PREFIX + q_text + "?="]
    return _split_words(text, raw, budget, b_length)


def _split_words(text: str, raw: bytes, budget: int, b_length: int) -> list[str]:
    """Encode ``text`` character by character into words within ``budget``."""
    q_pieces = [_q_char(char) for char in text]
    q_length = sum(map(len, q_pieces))
    words: list[str] = []
    if q_length <= b_length:
        current: list[str] = []
        size = 0
        for piece in q_pieces:
            if size + len(piece) > budget and current:
                words.append(_Q_PREFIX + "".join(current) + "?=")
                current, size = [], 0
                budget = ENCODED_WORD_LIMIT - _EW_OVERHEAD
            current.append(piece)
            size += len(piece)
        words.append(_Q_PREFIX + "".join(current) + "?=")
        return words
    chunk = bytearray()
    for char in text:
        encoded = char.encode("utf-8")
        if 4 * ((len(chunk) + len(encoded) + 2) // 3) > budget and chunk:
            words.append(_B_PREFIX + base64.b64encode(chunk).decode("ascii") + "?=")
            chunk = bytearray()
            budget = ENCODED_WORD_LIMIT - _EW_OVERHEAD
        chunk += encoded
    words.append(_B_PREFIX + base64.b64encode(chunk).decode("ascii") + "?=")
    return words


def fold(name: str, tokens: Sequence[str]) -> str:
    """Join header tokens with single spaces, folding lines at 78 where possible.

    Args:
        name: The header name.
        tokens: Pieces that may be separated by a fold (words, encoded words,
            addresses).

    Returns:
        The whole header field, ``Name: value`` plus CRLF, possibly on several lines.
    """
    field = f"{name}: {' '.join(tokens)}"
    if len(field) <= SOFT_LINE_LIMIT:
        # Fits one line: the loop below would fold nothing.
        return field + CRLF
    lines: list[str] = []
    line = f"{name}:"
    has_value = False
    for token in tokens:
        if has_value and len(line) + 1 + len(token) > SOFT_LINE_LIMIT:
            lines.append(line)
            line = ""
        line += " " + token
        has_value = True
    if not has_value:
        line += " "
    lines.append(line)
    return CRLF.join(lines) + CRLF


def _looks_encoded(text: str) -> bool:
    # Text that a decoder would take for an encoded word must itself be
    # encoded, so that it arrives literally (and cannot smuggle a newline).
    return "=?" in text


def unstructured_tokens(value: str, *, name: str) -> list[str]:
    """Return fold tokens for an unstructured value (Subject, custom headers).

    Plain printable ASCII goes out as it is; anything else (non-ASCII, runs of
    spaces, leading or trailing space, text that looks like an encoded word) is
    encoded whole, so that every decoder gets back exactly ``value``.
    """
    if not value:
        return []
    if (
        _PLAIN_TEXT.fullmatch(value)
        and not _looks_encoded(value)
        # Then no word is longer either.
        and len(name) + 2 + len(value) <= HARD_LINE_LIMIT
    ):
        return value.split(" ")
    return encoded_words(value, first_budget=SOFT_LINE_LIMIT - len(name) - 2)


def _phrase_words(text: str) -> list[str]:
    # Python's phrase parser (3.11 to 3.13, gh-92081) keeps the space between
    # two adjacent encoded words, where RFC 2047 6.2 readers drop it: no split
    # reads the same in both, so a split inside a word would add a space
    # ("株式会社サンプルシステムズジャ パン"). Write one encoded word, even past
    # RFC 2047's 75 characters (readers decode long words; the line stays
    # under 998 octets); only a name too long for that is split.
    words = encoded_words(text, first_budget=PHRASE_WORD_LIMIT)
    return words if len(words) == 1 else encoded_words(text)


def phrase_tokens(display_name: str) -> list[str]:
    """Return fold tokens for a display name.

    A name that is plain atoms stays as it is; other ASCII names are quoted.
    Non-ASCII names go in one encoded word (see ``_phrase_words``). Names too
    long even for that keep their ASCII words plain and encode the other runs,
    because Python's parser (unlike RFC 2047 6.2) keeps the space between two
    adjacent encoded words in a phrase: with plain words in between, both
    readings agree.
    """
    if not display_name:
        return []
    if not _looks_encoded(display_name):
        if _ATOMS.fullmatch(display_name):
            return display_name.split(" ")
        if _PRINTABLE_ASCII.fullmatch(display_name):
            escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
            return [f'"{escaped}"']
    words = _phrase_words(display_name)
    single_spaced = "  " not in display_name and display_name.strip(" ") == display_name
    if len(words) == 1 or not single_spaced:
        return words
    tokens: list[str] = []
    run: list[str] = []
    for word in display_name.split(" "):
        if _ATOMS.fullmatch(word) and not _looks_encoded(word):
            if run:
                tokens.extend(_phrase_words(" ".join(run)))
                run = []
            tokens.append(word)
        else:
            run.append(word)
    if run:
        tokens.extend(_phrase_words(" ".join(run)))
    return tokens


def address_tokens(addresses: Iterable[Address]) -> list[str]:
    """Return fold tokens for an address list: names, ``<addr>`` and commas."""
    tokens: list[str] = []
    items = list(addresses)
    for index, address in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        phrase = phrase_tokens(address.display_name)
        if phrase:
            tokens.extend(phrase)
            tokens.append(f"<{address.envelope}>{comma}")
        else:
            tokens.append(f"{address.envelope}{comma}")
    return tokens


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def encode_text_body(text: str, *, final_newline_is_free: bool) -> tuple[str, bytes]:
    """Choose a transfer encoding for a text body and encode it.

    Bare CR and bare LF become CRLF. Bodies go out as 7bit when they are ASCII
    with lines of at most 998 octets; otherwise quoted-printable, or base64
    when most bytes are non-ASCII (CJK text is shorter that way).

    Args:
        text: The body text.
        final_newline_is_free: True inside a multipart, where the CRLF before
            the boundary belongs to the boundary; False for a single-part
            message, whose content always ends with a CRLF on the wire, so a
            body without a final newline needs an encoding that can say so.

    Returns:
        The Content-Transfer-Encoding and the encoded body with CRLF line ends.
        In a multipart the boundary's own CRLF follows it; a single part is the
        whole content, ending with CRLF unless it is empty.
    """
    normal = _normalise_newlines(text) if "\r" in text else text
    ends_cleanly = final_newline_is_free or not normal or normal.endswith("\n")
    raw = normal.encode("utf-8")
    if (
        ends_cleanly
        and normal.isascii()
        # Bytes, not a regex: a search of the text cost a third of this function.
        and len(raw.translate(None, _CONTROL_BYTES)) == len(raw)
        and (
            len(raw) <= HARD_LINE_LIMIT
            or max(map(len, raw.split(b"\n"))) <= HARD_LINE_LIMIT
        )
    ):
        # A single part ends with its own final newline here ("" stays "").
        return "7bit", raw.replace(b"\n", b"\r\n")
    non_ascii = len(raw) - len(raw.translate(None, _NON_ASCII_BYTES))
    if non_ascii * 4 > len(raw):
        encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
        return "base64", encoded if not final_newline_is_free else encoded[:-2]
    encoded = binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False)
    encoded = encoded.replace(b"\n", b"\r\n")
    if not final_newline_is_free and not encoded.endswith(b"\r\n"):
        # Content ends with CRLF on the wire; a soft line break before it makes
        # the decoded body end exactly where the text does.
        encoded += b"=\r\n"
    return "quoted-printable", encoded


# Deleting these from a body leaves its ASCII bytes: the difference counts the rest.
_NON_ASCII_BYTES = bytes(range(0x80, 0x100))
# NUL and other C0 controls (bar TAB; LF ends lines) do not belong in 7bit
# text (RFC 5322 2.3).
_CONTROL_BYTES = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])


def new_boundary(*bodies: bytes, seed: str | None = None) -> str:
    """Return a multipart boundary that occurs in none of the given bodies.

    Args:
        bodies: The encoded parts the boundary must not occur in.
        seed: Derive the boundary from this (the Message-ID and the part's
            place), so rebuilding the same message gives the same bytes, as a
            resumed batch must for its DKIM signature; random without it.
    """
    attempt = 0
    while True:
        if seed is None:
            token = secrets.token_hex(12)
        else:
            source = f"{seed}/{attempt}".encode("utf-8", "surrogatepass")
            token = hashlib.sha256(source).hexdigest()[:24]
        # "=_" never appears in quoted-printable or base64 output.
        boundary = f"=_mailer_{token}"
        if not _occurs_in(boundary.encode("ascii"), bodies):
            return boundary
        attempt += 1


def _occurs_in(needle: bytes, bodies: Iterable[bytes]) -> bool:
    # A loop, not any() over a generator: that cost more than the searches.
    for body in bodies:  # noqa: SIM110
        if needle in body:
            return True
    return False
