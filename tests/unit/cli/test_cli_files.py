"""`mailer send` with hostile files: one line, exit 2, nothing sent; --dedupe.

Recipients files that cannot be read and journal paths that cannot hold a
journal end before anything is sent, with one `error:` line naming the file
(and the line), never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mailer.cli.app import app
from mailer.testing import Outbox

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration through the environment, as a user would set it."""
    monkeypatch.setenv("MAILER_FROM", "Example Shop <shop@example.test>")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(EXAMPLES / "templates"))


def send(*args: str) -> Result:
    return runner.invoke(app, ["send", "-t", "welcome", *args])


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.output


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("email,name,customer_id,plan\n" + "".join(rows))
    return path


def row(name: str, email: str | None = None) -> str:
    return f"{email or name.lower() + '@example.test'},{name},C-1,pro\n"


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (
            lambda p: p.write_bytes(
                "email,name,customer_id,plan\nj@example.test,Jérôme,C-1,pro\n".encode(
                    "cp1252"
                )
            ),
            ["line 2", "not UTF-8", "0xE9"],
        ),
        (
            lambda p: p.write_bytes(
                "email,name,customer_id,plan\nj@example.test,J,C-1,pro\n".encode(
                    "utf-16"
                )
            ),
            ["UTF-16", "save it as UTF-8"],
        ),
        (
            lambda p: p.write_text(
                "email,name,customer_id,plan\nj@example.test,J,C-1," + "x" * 140_000
            ),
            ["line 2", "a cell is longer than 131,072 characters"],
        ),
        (
            lambda p: p.write_text(
                "email,name,email,plan\nj@example.test,J,k@example.test,pro\n"
            ),
            ["line 1", "the column 'email' appears twice (columns 1 and 3)"],
        ),
    ],
    ids=["cp1252", "utf-16", "huge-cell", "duplicate-column"],
)
def test_an_unreadable_recipients_file_is_one_line_and_exit_2(
    mail_outbox: Outbox, tmp_path: Path, make: object, needles: list[str]
) -> None:
    """Encodings, a huge cell, a column named twice: one error line, nothing sent."""
    path = tmp_path / "recipients.csv"
    make(path)  # type: ignore[operator]
    for extra in ([], ["--dry-run"], ["--journal", str(tmp_path / "j.db")]):
        result = send("-r", str(path), *extra)
        assert_one_line_error(result, "recipients.csv", *needles)
    mail_outbox.assert_sent_count(0)


def test_bad_json_rows_are_listed_with_their_lines(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """A JSON key given twice, or nesting 100,000 deep: bad rows, line numbers."""
    path = tmp_path / "recipients.jsonl"
    path.write_text(
        '{"email": "ann@example.test", "name": "Ann", "customer_id": "C-1"}\n'
        '{"email": "x@example.test", "email": "bob@example.test", "name": "B"}\n'
        '{"email": "cy@example.test", "name": "Cy", "x": '
        + "[" * 100_000
        + "]" * 100_000
        + "}\n"
    )
    result = send("-r", str(path))
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "line 2: the key 'email' appears twice" in result.stderr
    assert "line 3: a value is nested more than 32 levels deep" in result.stderr
    mail_outbox.assert_sent_count(0)


def test_repeated_addresses_are_counted_before_sending(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """Each row is sent, and a note says which address repeats and how to avoid it."""
    path = write_csv(
        tmp_path / "r.csv",
        [row("Ann"), row("Bob"), row("Ann2", "ANN@example.test"), row("Ann")],
    )
    dry = send("-r", str(path), "--dry-run")
    assert dry.exit_code == 0
    assert (
        "dry run: 4 message(s) would be sent, 0 invalid row(s), 2 repeating an "
        "earlier address; nothing was sent"
    ) in dry.stdout
    result = send("-r", str(path))
    assert result.exit_code == 0, result.output
    assert (
        "note: 2 row(s) repeat the address of an earlier row: 1 address(es) on "
        "more than one row (first: ANN@example.test again on line 4); each row is "
        "sent (add --dedupe to send once per address)"
    ) in result.stderr
    mail_outbox.assert_sent_count(4)


def test_dedupe_sends_once_per_address_and_lists_the_others(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """--dedupe: the first row of each address is sent; repeats reported, exit 0."""
    path = write_csv(
        tmp_path / "r.csv",
        [row("Ann"), row("Bob"), row("Ann2", "ANN@example.test"), row("Ann")],
    )
    report = tmp_path / "report.jsonl"
    dry = send("-r", str(path), "--dry-run", "--dedupe")
    assert "dry run: 2 message(s) would be sent" in dry.stdout
    result = send("-r", str(path), "--dedupe", "--report", str(report))
    assert result.exit_code == 0, result.output
    assert [m.to for m in mail_outbox] == [
        ("ann@example.test",),
        ("bob@example.test",),
    ]
    assert "2 sent, 0 failed, 0 invalid, 2 repeated address(es) skipped (4 total)" in (
        result.stdout
    )
    lines = [json.loads(x) for x in report.read_text().splitlines()]
    assert sorted((x["line"], x["status"]) for x in lines) == [
        (2, "sent"),
        (3, "sent"),
        (4, "duplicate"),
        (5, "duplicate"),
    ]


def test_dedupe_with_a_journal_resumes_only_with_dedupe(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """A journal started with --dedupe has no entry for repeats: resumed with it only."""
    path = write_csv(tmp_path / "r.csv", [row("Ann"), row("Bob"), row("Ann")])
    journal = str(tmp_path / "j.db")
    first = send("-r", str(path), "--dedupe", "--journal", journal)
    assert first.exit_code == 0, first.output
    assert "2 sent, 0 failed, 0 invalid, 1 repeated address(es) skipped" in first.stdout
    again = send("-r", str(path), "--journal", journal)
    assert again.exit_code == 2
    assert again.stderr.splitlines()[-1].endswith(
        "its batch was started with --dedupe; run it with --dedupe again to resume it"
    )
    resumed = send("-r", str(path), "--dedupe", "--journal", journal)
    assert resumed.exit_code == 0, resumed.output
    assert "2 already sent" in resumed.stdout
    mail_outbox.assert_sent_count(2)


@pytest.mark.parametrize(
    ("journal", "needle"),
    [
        ("missing-folder/j.db", "does not exist"),
        ("a-folder", "is a directory"),
        ("notes.txt/j.db", "does not exist (or is not a folder)"),
        ("fifo", "not a regular file"),
        ("/sys/kernel/notes", "cannot be written here"),
    ],
)
def test_a_journal_path_that_cannot_hold_a_journal_is_one_line(
    mail_outbox: Outbox, tmp_path: Path, journal: str, needle: str
) -> None:
    """Missing folder, a directory, a FIFO, an unwritable file: exit 2, nothing sent."""
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "notes.txt").write_text("notes")
    os.mkfifo(tmp_path / "fifo")
    recipients = write_csv(tmp_path / "r.csv", [row("Ann")])
    result = send("-r", str(recipients), "--journal", journal)
    assert_one_line_error(result, "--journal", needle)
    mail_outbox.assert_sent_count(0)
    assert not (tmp_path / "missing-folder").exists()
