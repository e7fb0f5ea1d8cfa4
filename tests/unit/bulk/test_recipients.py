"""Recipients files: CSV and JSON Lines, streamed, with the right line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer import InvalidRecipientsError, InvalidRow, Recipient, RecipientFile


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_carry_their_line_numbers_and_context(tmp_path: Path) -> None:
    """Each row knows its line; columns become context; empty cells are left out."""
    path = write(
        tmp_path / "r.csv",
        "email,name,plan\nann@example.test,Ann,pro\n\nbob@example.test,,basic\n",
    )
    rows = list(RecipientFile(path))
    assert rows == [
        Recipient(
            line=2,
            email="ann@example.test",
            name="Ann",
            context={"email": "ann@example.test", "name": "Ann", "plan": "pro"},
        ),
        Recipient(
            line=4,
            email="bob@example.test",
            name="",
            context={"email": "bob@example.test", "plan": "basic"},
        ),
    ]


def test_a_quoted_multiline_cell_keeps_later_line_numbers_right(tmp_path: Path) -> None:
    """A cell spanning two lines does not shift the numbering of the next row."""
    path = write(
        tmp_path / "r.csv", 'email,note\na@example.test,"two\nlines"\nbad-row-here\n'
    )
    rows = list(RecipientFile(path))
    assert isinstance(rows[0], Recipient)
    assert rows[0].line == 2
    assert rows[1] == InvalidRow(4, "expected 2 columns, got 1")


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    """Spreadsheet CSVs starting with a BOM still have an `email` column."""
    path = tmp_path / "r.csv"
    path.write_bytes("\ufeffemail\nann@example.test\n".encode())
    assert [r.email for r in RecipientFile(path) if isinstance(r, Recipient)] == [
        "ann@example.test"
    ]


def test_a_csv_without_an_email_column_is_refused(tmp_path: Path) -> None:
    """The header must name an `email` column."""
    path = write(tmp_path / "r.csv", "mail,name\na@example.test,A\n")
    with pytest.raises(InvalidRecipientsError, match="no 'email' column"):
        RecipientFile(path)


def test_jsonl_rows_and_their_errors(tmp_path: Path) -> None:
    """JSON Lines: one object per line; bad lines are InvalidRows with their number."""
    path = write(
        tmp_path / "r.jsonl",
        '{"email": "ann@example.test", "items": [1, 2]}\n\n{not json}\n[1]\n{"name": "no email"}\n',
    )
    rows = list(RecipientFile(path))
    assert rows[0] == Recipient(
        line=1,
        email="ann@example.test",
        context={"email": "ann@example.test", "items": [1, 2]},
    )
    assert list(rows[1:]) == [
        InvalidRow(
            3, "invalid JSON: Expecting property name enclosed in double quotes"
        ),
        InvalidRow(4, "expected a JSON object"),
        InvalidRow(5, "no 'email' value"),
    ]


def test_the_file_is_read_again_on_each_iteration(tmp_path: Path) -> None:
    """A RecipientFile can be walked twice (check pass, then send pass)."""
    path = write(tmp_path / "r.ndjson", '{"email": "a@example.test"}\n')
    source = RecipientFile(path)
    assert list(source) == list(source)


@pytest.mark.parametrize(
    ("name", "message"),
    [("r.txt", "use a .csv, .jsonl or .ndjson file"), ("missing.csv", "no such file")],
)
def test_unusable_files_are_refused(tmp_path: Path, name: str, message: str) -> None:
    """Unknown kinds and missing files are errors before anything else."""
    if name.endswith(".txt"):
        write(tmp_path / name, "x")
    with pytest.raises(InvalidRecipientsError, match=message):
        RecipientFile(tmp_path / name)
