"""Read recipients from CSV or JSON Lines files, streaming, with line numbers.

Files are UTF-8 (a byte order mark is allowed). What makes the whole file
unreadable (another encoding, a NUL byte, a CSV cell past the reader's limit,
a column named twice) raises ``RecipientsFileError`` naming the line; what is
wrong with one row only (bad JSON, a key given twice, nesting past
``MAX_DEPTH``, no ``email``) makes that row an ``InvalidRow``.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mailer.exceptions import InvalidRecipientsError, RecipientsFileError

CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
EMAIL_KEY = "email"
NAME_KEY = "name"
# A JSON row nested deeper than this is refused (templates never need it, and
# deep values are what overflow recursive code).
MAX_DEPTH = 32
# Byte order marks of encodings that are not UTF-8, longest first (UTF-32 LE
# starts like UTF-16 LE).
FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
SAVE_AS_UTF8 = 'save it as UTF-8 (in Excel: "CSV UTF-8")'


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """One bad row of a recipients source: where it is and what is wrong."""

    line: int
    error: str


@dataclass(frozen=True, slots=True, init=False)
class DuplicateRow(InvalidRow):
    """A row not sent because an earlier row has its address (``dedupe``).

    It is an InvalidRow (a row not sent, and why), so code written before
    ``dedupe`` existed still accounts for it; check for it first to count it
    apart, as ``send_messages`` and the CLI do.

    Attributes:
        email: Its address ("" if the file changed before the row was read).
    """

    email: str

    def __init__(self, line: int, email: str) -> None:
        object.__setattr__(self, "line", line)
        object.__setattr__(
            self, "error", "the address of an earlier row (--dedupe sends it once)"
        )
        object.__setattr__(self, "email", email)


@dataclass(frozen=True, slots=True)
class Recipient:
    """One row: where it came from, the address, and the template context.

    Attributes:
        line: The row's line number in its file (1-based), or its position.
        email: The address, from the ``email`` column.
        name: The display name, from the ``name`` column ("" if absent).
        context: Every column of the row, for the templates.
    """

    line: int
    email: str
    name: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)


def recipient_from_mapping(row: Mapping[str, Any], line: int) -> Recipient | InvalidRow:
    """Build a Recipient from one row, or say what is wrong with it."""
    email = row.get(EMAIL_KEY)
    if not isinstance(email, str) or not email.strip():
        return InvalidRow(line, f"no {EMAIL_KEY!r} value")
    name = row.get(NAME_KEY) or ""
    if not isinstance(name, str):
        return InvalidRow(line, f"{NAME_KEY!r} must be text")
    return Recipient(line=line, email=email.strip(), name=name, context=dict(row))


class RecipientFile:
    """A recipients file that is read anew, row by row, each time it is iterated.

    CSV files need a header row with an ``email`` column, each column named
    once; empty cells are left out of the context (so a template using them
    fails instead of printing nothing), and so are columns without a name.
    JSON Lines files hold one object per line.

    Raises:
        InvalidRecipientsError: The file is missing, of an unknown kind, or
            (CSV) has no ``email`` column.
        RecipientsFileError: The file is not UTF-8, or (CSV) names a column
            twice; while iterating, a line that is not UTF-8, a NUL byte, or a
            CSV cell over the reader's limit.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        # A CSV file's header, once read: what a template may use.
        self.columns: tuple[str, ...] | None = None
        suffix = self.path.suffix.lower()
        if suffix not in CSV_SUFFIXES | JSONL_SUFFIXES:
            raise InvalidRecipientsError(
                [InvalidRow(0, f"{self.path}: use a .csv, .jsonl or .ndjson file")]
            )
        if not self.path.is_file():
            raise InvalidRecipientsError([InvalidRow(0, f"{self.path}: no such file")])
        self.kind = "csv" if suffix in CSV_SUFFIXES else "jsonl"
        self._check_encoding()
        if self.kind == "csv":
            self._check_csv_header()

    def __iter__(self) -> Iterator[Recipient | InvalidRow]:
        if self.kind == "csv":
            return self._csv_rows()
        return self._jsonl_rows()

    def _error(self, line: int, problem: str) -> RecipientsFileError:
        where = f"{self.path} line {line}" if line else str(self.path)
        return RecipientsFileError(
            f"{where}: {problem}", path=str(self.path), line=line
        )

    def _check_encoding(self) -> None:
        """Refuse UTF-16 and UTF-32 at once (the rest is checked line by line)."""
        with self.path.open("rb") as handle:
            start = handle.read(4)
        for bom, name in FOREIGN_BOMS:
            if start.startswith(bom):
                raise self._error(0, f"the file is {name} text; {SAVE_AS_UTF8}")
        with self.path.open("rb") as handle:
            next(_text_lines(handle, self._error), None)

    def _check_csv_header(self) -> None:
        with self.path.open("rb") as handle:
            header = next(csv.reader(_text_lines(handle, self._error)), None)
        columns = [column.strip() for column in header or []]
        self.columns = tuple(columns)
        if EMAIL_KEY not in columns:
            raise InvalidRecipientsError(
                [InvalidRow(1, f"{self.path}: {_header_problem(header, columns)}")]
            )
        first: dict[str, int] = {}
        for number, column in enumerate(columns, start=1):
            if column and column in first:
                raise self._error(
                    1,
                    f"the column {column!r} appears twice (columns {first[column]} "
                    f"and {number}); name each column once",
                )
            first.setdefault(column, number)

    def _csv_rows(self) -> Iterator[Recipient | InvalidRow]:
        with self.path.open("rb") as handle:
            reader = csv.reader(_text_lines(handle, self._error))
            header = [column.strip() for column in next(reader)]
            start = line = reader.line_num + 1
            try:
                for cells in reader:
                    start, line = line, reader.line_num + 1
                    # Blank: no cell holds anything but white space (one
                    # join, a fifth of the cost of a generator over the cells).
                    if not "".join(cells).strip():
                        continue
                    if len(cells) != len(header):
                        yield InvalidRow(
                            start, f"expected {len(header)} columns, got {len(cells)}"
                        )
                        continue
                    row = {
                        k: v
                        for k, v in zip(header, cells, strict=True)
                        if v != "" and k != ""
                    }
                    yield recipient_from_mapping(row, start)
            except csv.Error as exc:
                raise self._error(line, _csv_problem(exc)) from None

    def _jsonl_rows(self) -> Iterator[Recipient | InvalidRow]:
        with self.path.open("rb") as handle:
            for number, text in enumerate(_text_lines(handle, self._error), start=1):
                if not text.strip():
                    continue
                row = parse_json_row(text)
                if isinstance(row, str):
                    yield InvalidRow(number, row)
                    continue
                yield recipient_from_mapping(row, number)


def _text_lines(
    handle: IO[bytes], error: Callable[[int, str], RecipientsFileError]
) -> Iterator[str]:
    """Decode a file line by line as UTF-8 (line endings kept, a BOM dropped).

    Splitting at each newline byte is safe: no byte of a multi-byte UTF-8
    character is a newline. The first line that is not UTF-8, or holds a NUL
    byte, raises.
    """
    for number, raw in enumerate(handle, start=1):
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(
                number,
                f"not UTF-8 text (byte 0x{raw[exc.start]:02X} at byte "
                f"{exc.start + 1} of the line); {SAVE_AS_UTF8}",
            ) from None
        if "\x00" in text:
            raise error(
                number,
                "a NUL byte: is it UTF-16 text, or not text at all? " + SAVE_AS_UTF8,
            )
        yield text


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return (
            f"a cell is longer than {csv.field_size_limit():,} characters, the "
            "limit (a quote left open makes the rest of the file one cell)"
        )
    return f"not readable as CSV: {exc}"


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing a key given twice (json keeps the last)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def parse_json_row(text: str) -> dict[str, Any] | str:
    """Return one JSON Lines row as a dict, or what is wrong with it."""
    try:
        row = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        return f"the key {exc.key!r} appears twice"
    except RecursionError:
        return f"a value is nested more than {MAX_DEPTH} levels deep"
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg}"
    except ValueError:
        # int() refuses numbers past sys.get_int_max_str_digits() (4300).
        return "invalid JSON: a number with too many digits"
    if not isinstance(row, dict):
        return "expected a JSON object"
    if _is_deeper_than(row, MAX_DEPTH):
        return f"a value is nested more than {MAX_DEPTH} levels deep"
    return row


def _is_deeper_than(value: object, limit: int) -> bool:
    """Return whether lists and objects nest deeper than ``limit`` (no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[object]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# Separators spreadsheets use instead of commas (a "CSV" saved in some locales).
_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _header_problem(header: list[str] | None, columns: list[str]) -> str:
    """Return why a CSV header has no ``email`` column, and what was found instead."""
    if not header or not any(columns):
        return (
            "the file is empty; a CSV file needs a header row naming its columns, "
            f"one of them {EMAIL_KEY!r}"
        )
    if len(columns) == 1:
        for separator, name in _OTHER_SEPARATORS.items():
            if separator in columns[0]:
                return (
                    f"the header row is one column, {columns[0][:80]!r}: the file "
                    f"looks separated by {name}; mailer reads comma-separated "
                    f"files (save it as CSV with commas), and needs an "
                    f"{EMAIL_KEY!r} column"
                )
    found = ", ".join(repr(column) for column in columns[:20])
    more = f" and {len(columns) - 20} more" if len(columns) > 20 else ""
    near = [column for column in columns if column.lower() == EMAIL_KEY]
    hint = (
        f"; column names are case-sensitive: rename {near[0]!r} to {EMAIL_KEY!r}"
        if near
        else ""
    )
    return f"the header row has no {EMAIL_KEY!r} column (found {found}{more}){hint}"
