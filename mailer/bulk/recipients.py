"""Read recipients from CSV or JSON Lines files, streaming, with line numbers."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailer.exceptions import InvalidRecipientsError

CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
EMAIL_KEY = "email"
NAME_KEY = "name"


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """One bad row of a recipients source: where it is and what is wrong."""

    line: int
    error: str


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

    CSV files need a header row with an ``email`` column; empty cells are left
    out of the context (so a template using them fails instead of printing
    nothing). JSON Lines files hold one object per line.

    Raises:
        InvalidRecipientsError: The file is missing, of an unknown kind, or
            (CSV) has no ``email`` column.
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
        if self.kind == "csv":
            self._check_csv_header()

    def __iter__(self) -> Iterator[Recipient | InvalidRow]:
        if self.kind == "csv":
            return self._csv_rows()
        return self._jsonl_rows()

    def _check_csv_header(self) -> None:
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
        columns = [column.strip() for column in header or []]
        self.columns = tuple(columns)
        if EMAIL_KEY not in columns:
            raise InvalidRecipientsError(
                [InvalidRow(1, f"{self.path}: {_header_problem(header, columns)}")]
            )

    def _csv_rows(self) -> Iterator[Recipient | InvalidRow]:
        # utf-8-sig: spreadsheets often start CSV files with a byte order mark.
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [column.strip() for column in next(reader)]
            line = reader.line_num + 1
            for cells in reader:
                start, line = line, reader.line_num + 1
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(header):
                    yield InvalidRow(
                        start, f"expected {len(header)} columns, got {len(cells)}"
                    )
                    continue
                row = {k: v for k, v in zip(header, cells, strict=True) if v != ""}
                yield recipient_from_mapping(row, start)

    def _jsonl_rows(self) -> Iterator[Recipient | InvalidRow]:
        with self.path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield InvalidRow(number, f"invalid JSON: {exc.msg}")
                    continue
                if not isinstance(row, dict):
                    yield InvalidRow(number, "expected a JSON object")
                    continue
                yield recipient_from_mapping(row, number)


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
