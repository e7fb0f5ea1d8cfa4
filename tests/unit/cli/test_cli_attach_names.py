"""Impossible attachment file names are bad rows or usage errors, never a traceback.

Found by attacking --attach-column: a name longer than the file system allows
(ENAMETOOLONG, which Path.is_file() does not swallow) or holding a NUL byte
(ValueError) ended `mailer send` in a traceback, exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer.cli.app import app
from mailer.testing import Outbox

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A template set and a folder with one file."""
    templates = tmp_path / "templates" / "invoice"
    templates.mkdir(parents=True)
    (templates / "subject.txt").write_text("Invoice\n")
    (templates / "body.txt").write_text("Hello {{ name }}\n")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.pdf").write_bytes(b"%PDF-1")
    monkeypatch.setenv("MAILER_FROM", "Shop <shop@example.test>")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(tmp_path / "templates"))
    return tmp_path


def test_impossible_names_in_the_column_are_bad_rows(
    project: Path, mail_outbox: Outbox
) -> None:
    """Too long, a path too long, a NUL byte: exit 2, each row named, nothing sent."""
    # JSON Lines: a NUL byte in a CSV file is refused for the whole file (it
    # means UTF-16 or binary), but JSON can carry one inside a value.
    rows = project / "r.jsonl"
    rows.write_text(
        "\n".join(
            json.dumps({"email": email, "name": name, "invoice": invoice})
            for email, name, invoice in [
                ("ann@example.test", "Ann", f"{'x' * 300}.pdf"),
                ("bob@example.test", "Bob", f"a.pdf;{'y/' * 3000}"),
                ("cy@example.test", "Cy", "a\x00b.pdf"),
                ("dee@example.test", "Dee", "a.pdf"),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = runner.invoke(
        app,
        [
            "send",
            "-t",
            "invoice",
            "-r",
            str(rows),
            "--attach-column",
            "invoice",
            "--attachments-dir",
            str(project / "files"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for line, reason in [
        (1, "File name too long"),
        (2, "File name too long"),
        (3, "NUL byte"),
    ]:
        assert f"line {line}: invoice:" in result.output
        assert reason in result.output
    assert "3 invalid rows" in result.output
    assert len(mail_outbox) == 0


def test_an_impossible_attach_path_is_one_line(
    project: Path, mail_outbox: Outbox
) -> None:
    """--attach with a name too long for the file system: one line, exit 2."""
    rows = project / "r.csv"
    rows.write_text("email,name\nann@example.test,Ann\n", encoding="utf-8")
    result = runner.invoke(
        app, ["send", "-t", "invoice", "-r", str(rows), "--attach", "z" * 300]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0, result.output
    assert "--attach" in result.output
    assert "File name too long" in result.output
    assert len(mail_outbox) == 0
