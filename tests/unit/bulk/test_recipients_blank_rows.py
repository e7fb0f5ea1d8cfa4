"""CSV rows holding nothing but white space are skipped; any other row is read."""

from __future__ import annotations

from pathlib import Path

from mailer.bulk.recipients import InvalidRow, Recipient, RecipientFile


def test_rows_of_empty_or_white_space_cells_are_skipped(tmp_path: Path) -> None:
    """Empty lines, ",,", " , \\t," and a quoted blank are not rows; line numbers stay."""
    path = tmp_path / "r.csv"
    path.write_text(
        'email,name,plan\n\n,,\n , \t,\n"  ",,\nann@example.test,Ann,pro\n',
        encoding="utf-8",
    )
    rows = list(RecipientFile(path))
    assert rows == [
        Recipient(
            6,
            "ann@example.test",
            "Ann",
            {"email": "ann@example.test", "name": "Ann", "plan": "pro"},
        )
    ]


def test_a_row_with_one_non_blank_cell_is_a_row(tmp_path: Path) -> None:
    """A row whose only value is in a column other than email is a bad row, kept."""
    path = tmp_path / "r.csv"
    path.write_text("email,name,plan\n , ,x\n", encoding="utf-8")
    assert list(RecipientFile(path)) == [InvalidRow(2, "no 'email' value")]
