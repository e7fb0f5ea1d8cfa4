"""Template previews: samples, rendering, and errors with file and line (no sockets)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mailer.inbox.previews import Sample, fingerprint, list_sets, render_preview

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "templates"


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A copy of the example templates, safe to edit."""
    folder = tmp_path / "templates"
    shutil.copytree(EXAMPLES, folder)
    return folder


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_every_set_is_listed_but_layout_folders(templates: Path) -> None:
    """Folders with subject.txt are sets; _layouts and loose files are not."""
    write(templates / "reset" / "subject.txt", "Reset\n")
    write(templates / "reset" / "body.txt", "Code {{ code }}\n")
    assert list_sets(templates) == ["reset", "welcome"]
    assert list_sets(templates / "missing") == []


def test_a_set_renders_with_its_preview_json(templates: Path) -> None:
    """preview.json's samples render; each one can be chosen."""
    first = render_preview(templates, "welcome")
    assert first.problem is None
    assert first.subject == "Welcome to Example Shop, Ann Example!"
    assert "Your Pro plan is active" in (first.text or "")
    assert "<b>C-001</b>" in (first.html or "")
    assert first.to == "ann@example.test"
    second = render_preview(templates, "welcome", sample=1)
    assert second.subject == "Welcome to Example Shop, Zoë Ünïcode!"
    assert len(second.samples) == 2


def test_recipient_rows_are_samples_for_a_set_without_preview_json(
    templates: Path,
) -> None:
    """Without preview.json, the rows given (from --recipients) are the samples."""
    (templates / "welcome" / "preview.json").unlink()
    rows = [
        Sample(
            "line 2: bob@example.test",
            {
                "email": "bob@example.test",
                "name": "Bob",
                "customer_id": "C-2",
                "plan": "basic",
            },
        )
    ]
    preview = render_preview(templates, "welcome", rows=rows)
    assert preview.subject == "Welcome to Example Shop, Bob!"
    assert preview.to == "bob@example.test"


def test_an_undefined_variable_is_named_with_its_file_and_line(templates: Path) -> None:
    """A typo in body.html line 4: the problem names the variable, file and line."""
    body = templates / "welcome" / "body.html"
    lines = body.read_text(encoding="utf-8").splitlines()
    lines[3] = "<h1>Hello {{ nmae }},</h1>"
    write(body, "\n".join(lines) + "\n")
    preview = render_preview(templates, "welcome")
    assert preview.problem is not None
    assert (preview.problem.variable, preview.problem.file, preview.problem.line) == (
        "nmae",
        "welcome/body.html",
        4,
    )
    assert preview.text is not None  # what did render is still shown


def test_an_error_in_a_layout_points_at_the_layout(templates: Path) -> None:
    """An undefined variable inside an extended layout names the layout's file and line."""
    layout = templates / "_layouts" / "email.html"
    write(layout, layout.read_text(encoding="utf-8") + "{{ footer_note }}\n")
    preview = render_preview(templates, "welcome")
    assert preview.problem is not None
    assert preview.problem.file == "_layouts/email.html"
    assert preview.problem.variable == "footer_note"
    assert preview.problem.line is not None


def test_a_syntax_error_is_shown_with_its_line(templates: Path) -> None:
    """A template that does not parse: the problem has the line."""
    write(templates / "welcome" / "body.txt", "ok\n{% if %}\n")
    preview = render_preview(templates, "welcome")
    assert preview.problem is not None
    assert preview.problem.line == 2
    assert "body.txt" in preview.problem.message


def test_a_set_without_samples_names_the_missing_variable(templates: Path) -> None:
    """No preview.json and no rows: one empty sample, so the page says what is missing."""
    (templates / "welcome" / "preview.json").unlink()
    preview = render_preview(templates, "welcome")
    assert preview.samples[0].label == "no sample data"
    assert preview.problem is not None
    assert preview.problem.variable == "name"


def test_a_broken_preview_json_is_reported_with_its_line(templates: Path) -> None:
    """preview.json that is not JSON: the problem names the file and line."""
    write(templates / "welcome" / "preview.json", '{\n  "name": "Ann",\n  oops\n}\n')
    preview = render_preview(templates, "welcome")
    assert preview.problem is not None
    assert (preview.problem.file, preview.problem.line) == ("welcome/preview.json", 3)


def test_a_rendered_subject_with_a_newline_is_refused_as_sending_would(
    templates: Path,
) -> None:
    """The preview builds the real Message: a bad subject is a problem, not a page."""
    write(templates / "welcome" / "subject.txt", "Hi {{ name }}\nBcc: x@evil.test\n")
    preview = render_preview(templates, "welcome")
    assert preview.problem is not None
    assert "subject" in preview.problem.message


def test_an_unknown_set_is_a_lookup_error(templates: Path) -> None:
    """A name that is not a set (or tries to leave the folder) is not rendered."""
    for name in ("nope", "..", "_layouts"):
        with pytest.raises(LookupError):
            render_preview(templates, name)


def test_the_fingerprint_changes_when_a_file_changes(templates: Path) -> None:
    """Editing any file under the templates folder changes the fingerprint."""
    before = fingerprint(templates)
    write(templates / "welcome" / "body.txt", "changed\n")
    assert fingerprint(templates) != before
