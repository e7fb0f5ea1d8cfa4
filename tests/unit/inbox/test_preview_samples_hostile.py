"""A preview.json nested too deeply is shown as a problem on the page, not a 500.

Found by attacking the previews: json.loads raised RecursionError on a
preview.json of 100,000 nested lists, and render_preview let it out, so the
preview page answered 500 where the README promises the error on the page.
"""

from __future__ import annotations

from pathlib import Path

from mailer.inbox.previews import render_preview


def test_a_preview_json_nested_too_deeply_is_a_problem(tmp_path: Path) -> None:
    """The problem names the file; the set is still listed and rendered no further."""
    folder = tmp_path / "welcome"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello {{ name }}\n")
    (folder / "body.txt").write_text("Body\n")
    (folder / "preview.json").write_text("[" * 100_000 + "]" * 100_000)
    preview = render_preview(tmp_path, "welcome")
    assert preview.problem is not None
    assert preview.problem.file == "welcome/preview.json"
    assert "nested too deeply" in preview.problem.message
