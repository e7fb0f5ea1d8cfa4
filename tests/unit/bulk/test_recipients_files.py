"""Hostile recipients files: encodings, huge cells, deep JSON, duplicate columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailer import InvalidRow, Recipient, RecipientFile, RecipientsFileError


def rows_of(path: Path) -> list[Recipient | InvalidRow]:
    return list(RecipientFile(path))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_windows_1252_file_is_refused_naming_the_line(
    tmp_path: Path, suffix: str
) -> None:
    """cp1252 bytes: one error naming the file, the line and the byte, no decode crash."""
    path = tmp_path / f"r{suffix}"
    if suffix == ".csv":
        text = "email,name\nann@example.test,Ann\njerome@example.test,Jérôme\n"
    else:
        text = '{"email": "ann@example.test"}\n{"email": "j@example.test", "name": "Jérôme"}\n'
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(RecipientsFileError) as caught:
        rows_of(path)
    message = str(caught.value)
    assert caught.value.line == (3 if suffix == ".csv" else 2)
    assert f"line {caught.value.line}" in message
    assert "not UTF-8" in message
    assert "0xE9" in message
    assert "\n" not in message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_utf_16_file_is_refused_when_opened(tmp_path: Path, encoding: str) -> None:
    """UTF-16/32, with or without a byte order mark: refused at once, saying which."""
    path = tmp_path / "r.csv"
    path.write_bytes("email,name\nann@example.test,Ann\n".encode(encoding))
    with pytest.raises(RecipientsFileError, match=r"UTF-(16|32).*save it as UTF-8"):
        RecipientFile(path)


def test_a_csv_cell_over_the_limit_names_its_line(tmp_path: Path) -> None:
    """A 200 KB cell (or a quote left open) is one error with the line, not csv.Error."""
    path = tmp_path / "r.csv"
    path.write_text(
        "email,note\nann@example.test,short\nbob@example.test," + "x" * 200_000 + "\n",
        encoding="utf-8",
    )
    with pytest.raises(RecipientsFileError, match="line 3: a cell is longer") as caught:
        rows_of(path)
    assert caught.value.line == 3


def test_a_nul_byte_in_a_csv_names_its_line(tmp_path: Path) -> None:
    """A NUL byte (a binary or UTF-16 file renamed .csv) is an error with the line."""
    path = tmp_path / "r.csv"
    path.write_bytes(b"email,name\nann@example.test,A\x00nn\n")
    with pytest.raises(RecipientsFileError, match="line 2"):
        rows_of(path)


def test_a_deeply_nested_json_value_is_a_bad_row(tmp_path: Path) -> None:
    """100,000 nested arrays: that row is invalid (with its line), the others read."""
    path = tmp_path / "r.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    shallow_but_deep = json.dumps({"email": "c@example.test", "x": [[[[[[[[[]]]]]]]]]})
    path.write_text(
        '{"email": "ann@example.test"}\n'
        f'{{"email": "bob@example.test", "x": {deep}}}\n'
        '{"email": "cy@example.test", "x": ' + "[" * 40 + "]" * 40 + "}\n"
        f"{shallow_but_deep}\n",
        encoding="utf-8",
    )
    rows = rows_of(path)
    assert isinstance(rows[0], Recipient)
    assert rows[1] == InvalidRow(2, "a value is nested more than 32 levels deep")
    assert rows[2] == InvalidRow(3, "a value is nested more than 32 levels deep")
    assert isinstance(rows[3], Recipient)


def test_a_huge_json_number_is_a_bad_row(tmp_path: Path) -> None:
    """An integer past Python's digit limit is a bad row, not a ValueError."""
    path = tmp_path / "r.jsonl"
    path.write_text('{"email": "a@example.test", "n": 1' + "0" * 5000 + "}\n")
    [row] = rows_of(path)
    assert isinstance(row, InvalidRow)
    assert row.line == 1
    assert "invalid JSON" in row.error


@pytest.mark.parametrize(
    ("header", "column", "where"),
    [
        ("email,name,email", "email", "columns 1 and 3"),
        ("email,name, name ", "name", "columns 2 and 3"),
    ],
)
def test_a_column_named_twice_is_refused(
    tmp_path: Path, header: str, column: str, where: str
) -> None:
    """A duplicate header (spaces aside) is an error, not 'the last one wins'."""
    path = tmp_path / "r.csv"
    path.write_text(f"{header}\nann@example.test,Ann,bob@example.test\n")
    with pytest.raises(RecipientsFileError) as caught:
        RecipientFile(path)
    assert caught.value.line == 1
    assert f"the column {column!r} appears twice ({where})" in str(caught.value)


def test_empty_column_names_are_not_duplicates(tmp_path: Path) -> None:
    """Trailing empty columns (spreadsheet exports) are ignored, not refused."""
    path = tmp_path / "r.csv"
    path.write_text("email,name,,\nann@example.test,Ann,,\n")
    [row] = rows_of(path)
    assert isinstance(row, Recipient)
    assert row.context == {"email": "ann@example.test", "name": "Ann"}


def test_a_json_key_given_twice_is_a_bad_row(tmp_path: Path) -> None:
    """{"email": a, "email": b} is invalid (naming the key), not silently b."""
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"email": "ann@example.test", "email": "bob@example.test"}\n'
        '{"email": "cy@example.test", "data": {"k": 1, "k": 2}}\n'
        '{"email": "dee@example.test"}\n'
    )
    rows = rows_of(path)
    assert rows[0] == InvalidRow(1, "the key 'email' appears twice")
    assert rows[1] == InvalidRow(2, "the key 'k' appears twice")
    assert isinstance(rows[2], Recipient)
