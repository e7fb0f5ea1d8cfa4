"""The command line in an operator's hands (issues 11 and 12): in-process, no sockets.

Outputs that cannot be written, help and version, one-message sends, where the
settings came from, the progress bar's total, and the smaller papercuts.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mailer.cli.app import app
from mailer.testing import Addr, Mail, Outbox

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RECIPIENTS = str(EXAMPLES / "recipients.csv")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration through the environment, as a user would set it."""
    monkeypatch.setenv("MAILER_FROM", "Example Shop <shop@example.test>")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(EXAMPLES / "templates"))


def rows_file(folder: Path, count: int, name: str = "rows.csv") -> Path:
    path = folder / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            writer.writerow([f"user{n}@example.test", f"User {n}", f"C-{n}", "pro"])
    return path


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --- 11.10: outputs that cannot be written ------------------------------------


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        (
            "missing/folder/report.jsonl",
            "No such file or directory (does the folder exist?)",
        ),
        (".", "Is a directory"),
    ],
    ids=["a missing folder", "a directory"],
)
def test_a_report_that_cannot_be_opened_stops_before_anything_is_sent(
    mail_outbox: Outbox, tmp_path: Path, where: str, reason: str
) -> None:
    """--report in a missing folder or on a directory: one line, exit 2, nothing sent (was a traceback or a hang)."""
    result = runner.invoke(
        app,
        ["send", "-t", "welcome", "-r", RECIPIENTS, "--report", str(tmp_path / where)],
    )
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert line.startswith(f"error: --report {tmp_path / where}: cannot write there")
    assert reason in line
    mail_outbox.assert_nothing_sent()


def test_a_report_on_a_full_disk_stops_the_batch_with_a_summary(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """/dev/full: the batch stops, every message is counted, the failure is said once, exit 2."""
    rows = rows_file(tmp_path, 300)
    result = runner.invoke(
        app, ["send", "-t", "welcome", "-r", str(rows), "--report", "/dev/full"]
    )
    assert result.exit_code == 2, result.output
    summary = re.search(
        r"(\d+) sent, 0 failed, (\d+) pending, 0 invalid \(300 total\)", result.stdout
    )
    assert summary is not None, result.stdout
    sent, pending = map(int, summary.groups())
    assert sent + pending == 300
    assert pending > 0
    assert len(mail_outbox) == sent
    assert (
        "error: the report /dev/full could not be written: No space left on device; "
        "the batch was stopped" in result.stderr
    )
    assert (
        f"{pending} pending: not sent: stopped: the report /dev/full cannot be written"
        in result.stderr
    )
    assert "report written to" not in result.stdout


def test_a_journal_stays_consistent_when_the_report_fails(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """The journal's counts match the summary, and running again sends only the rest."""
    rows = rows_file(tmp_path, 300)
    journal = tmp_path / "batch.db"
    first = runner.invoke(
        app,
        [
            "send",
            "-t",
            "welcome",
            "-r",
            str(rows),
            "--report",
            "/dev/full",
            "--journal",
            str(journal),
        ],
    )
    assert first.exit_code == 2, first.output
    sent = int(first.stdout.split(" sent,")[0].splitlines()[-1])
    assert f"the journal {journal} is consistent" in first.stderr
    status = runner.invoke(app, ["status", "--journal", str(journal)])
    assert f"sent: {sent}" in status.stdout or f"{sent} sent" in status.stdout, (
        status.stdout
    )
    again = runner.invoke(
        app, ["send", "-t", "welcome", "-r", str(rows), "--journal", str(journal)]
    )
    assert again.exit_code == 0, again.output
    assert len(mail_outbox) == 300
    assert len({mail.envelope.rcpt_tos for mail in mail_outbox}) == 300


# --- 12.8: header rows ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the file is empty; a CSV file needs a header row"),
        ("email;name\na@example.test;A\n", "the file looks separated by semicolons"),
        ("email\tname\na@example.test\tA\n", "the file looks separated by tabs"),
        (
            "Email,Name\na@example.test,A\n",
            "no 'email' column (found 'Email', 'Name'); column names are case-sensitive: rename 'Email' to 'email'",
        ),
        ("mail,name\na@example.test,A\n", "no 'email' column (found 'mail', 'name')"),
    ],
    ids=["empty", "semicolons", "tabs", "Email", "other columns"],
)
def test_the_header_row_error_says_what_was_found(
    mail_outbox: Outbox, tmp_path: Path, content: str, expected: str
) -> None:
    """Each header mistake gets its own reason (it was 'no email column' for all)."""
    path = tmp_path / "people.csv"
    path.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["send", "-t", "welcome", "-r", str(path)])
    assert result.exit_code == 2
    assert expected in one_line_error(result.stderr)
    mail_outbox.assert_nothing_sent()


# --- 12.7: a column the template needs -----------------------------------------


def test_a_missing_column_is_said_once_with_the_count(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """2,000 rows without customer_id: one line for them all, not 2,000."""
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "plan"])
        for n in range(2000):
            writer.writerow([f"u{n}@example.test", f"U {n}", "pro"])
    result = runner.invoke(app, ["send", "-t", "welcome", "-r", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        # body.html renders first (a text part may be derived from it).
        "2000 rows (lines 2-2001): column 'customer_id' is used by body.html but is "
        "not in the header",
        "error: 2000 invalid rows (first: line 2: column 'customer_id' is used by "
        "body.html but is not in the header); nothing was sent",
    ]
    mail_outbox.assert_nothing_sent()


def test_an_empty_cell_is_named_as_such(mail_outbox: Outbox, tmp_path: Path) -> None:
    """A column in the header but empty on one row: that row, and how to allow it."""
    path = tmp_path / "people.csv"
    path.write_text(
        "email,name,customer_id,plan\na@example.test,A,,pro\nb@example.test,B,2,pro\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["send", "-t", "welcome", "-r", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "line 2: column 'customer_id' is empty on this row, and body.html uses it"
    )
    assert '{{ customer_id | default("...") }}' in result.stderr


# --- 12.9: smaller papercuts ---------------------------------------------------


def test_a_template_name_with_a_trailing_slash_is_the_same_set(
    mail_outbox: Outbox,
) -> None:
    """-t welcome/ (what shell completion types) sends the welcome set."""
    result = runner.invoke(app, ["send", "-t", "welcome/", "-r", RECIPIENTS])
    assert result.exit_code == 0, result.output
    mail_outbox.assert_sent_count(4)


def test_preview_names_no_line_for_an_error_in_the_template_set() -> None:
    """A missing set is about the set: no 'line 2:' in front of it."""
    result = runner.invoke(app, ["preview", "-t", "nope", "-r", RECIPIENTS])
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert line.startswith("error: template 'nope': ")
    assert "line 2" not in line


def test_preview_of_line_1_says_it_is_the_header() -> None:
    """--line 1 of a CSV file is its header, and the message says where the first row is."""
    result = runner.invoke(
        app, ["preview", "-t", "welcome", "-r", RECIPIENTS, "--line", "1"]
    )
    assert result.exit_code == 2
    assert one_line_error(result.stderr) == (
        f"error: --line 1: line 1 of {RECIPIENTS} is the header row; the first "
        "recipient is on line 2"
    )


def test_preview_still_names_the_line_of_a_bad_row(tmp_path: Path) -> None:
    """An error in the row itself keeps its line number."""
    path = tmp_path / "bad.csv"
    path.write_text("email,name,customer_id,plan\nbroken,B,1,pro\n", encoding="utf-8")
    result = runner.invoke(app, ["preview", "-t", "welcome", "-r", str(path)])
    assert one_line_error(result.stderr) == (
        "error: line 2: to: invalid address 'broken': An email address must have an "
        "@-sign."
    )


def test_a_journal_refused_after_the_file_changed_names_it_once(
    mail_outbox: Outbox, tmp_path: Path
) -> None:
    """The recipients file changed under a journal: said plainly, the path once."""
    rows = rows_file(tmp_path, 3)
    journal = tmp_path / "j.db"
    args = ["send", "-t", "welcome", "-r", str(rows), "--journal", str(journal)]
    assert runner.invoke(app, args).exit_code == 0
    with rows.open("a", encoding="utf-8") as handle:
        handle.write("late@example.test,Late,C-9,pro\n")
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert line.count(str(rows)) == 1
    assert f"{rows} changed since the journal was started" in line


# --- 12.10: the progress bar ---------------------------------------------------


def test_the_progress_bar_shows_the_total_rate_and_time_left(
    mail_outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal: 4/4 (the check pass counted the rows), a rate, a time left (it was 4/?)."""
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, highlight=False)
    monkeypatch.setattr("mailer.cli.send.err", console)
    result = runner.invoke(app, ["send", "-t", "welcome", "-r", RECIPIENTS])
    assert result.exit_code == 0, result.output
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "4/4" in drawn
    assert "/?" not in drawn
    assert re.search(r"\d+\.\d/s", drawn), drawn
    assert re.search(r"\d:\d\d:\d\d", drawn)


# --- 12.11: help, version, one message -----------------------------------------


def test_version_prints_the_version() -> None:
    """mailer --version (and -V): the version, exit 0."""
    for flag in ("--version", "-V"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0
        assert re.fullmatch(
            r"mailer \S+ \(aiomailer, Python 3\.\d+\.\d+\)\n", result.stdout
        )


@pytest.mark.parametrize(
    "command", [[], ["send"], ["preview"], ["status"], ["inbox"], ["demo"]]
)
def test_help_has_dash_h_and_no_type_placeholders(command: list[str]) -> None:
    """-h works like --help, and no option reads '<bool>' or '<str>'."""
    result = runner.invoke(app, [*command, "-h"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout
    assert "<bool>" not in result.stdout
    assert "<str>" not in result.stdout
    assert "<path>" not in result.stdout


def test_send_help_names_values_by_what_they_are() -> None:
    """Metavars say what to give: NAME, FILE, ADDR."""
    result = runner.invoke(app, ["send", "-h"])
    assert "-t, --template NAME" in result.stdout
    assert "-r, --recipients FILE" in result.stdout
    assert "--to ADDR" in result.stdout
    assert "--env-file FILE" in result.stdout


def test_one_message_from_the_command_line(mail_outbox: Outbox) -> None:
    """--to/--subject/--text/--html: one message through the configured client, its reply printed."""
    result = runner.invoke(
        app,
        [
            "send",
            "--to",
            "ann@example.test",
            "--subject",
            "Config check",
            "--text",
            "It works.",
            "--html",
            "<p>It works.</p>",
        ],
    )
    assert result.exit_code == 0, result.output
    mail_outbox.assert_sent(
        Mail(
            to=Addr("ann@example.test"), subject="Config check", html="<p>It works.</p>"
        )
    )
    assert result.stdout.startswith("sent to ann@example.test: 250 ")
    assert "Message-ID: <" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--to", "a@example.test", "--subject", "S"], "missing --text"),
        (["--to", "a@example.test", "--text", "T"], "missing --subject"),
        (
            [
                "--to",
                "a@example.test",
                "--subject",
                "S",
                "--text",
                "T",
                "-t",
                "welcome",
            ],
            "--template is for a template batch",
        ),
        (
            ["--to", "broken", "--subject", "S", "--text", "T"],
            "to: invalid address 'broken'",
        ),
        (
            [],
            "missing --template/-t (or --to ADDR --subject S --text T for one message)",
        ),
    ],
)
def test_one_message_usage_errors_are_one_line(
    mail_outbox: Outbox, args: list[str], expected: str
) -> None:
    """Missing or clashing options for a one-message send: one line, exit 2."""
    result = runner.invoke(app, ["send", *args])
    assert result.exit_code == 2
    assert expected in one_line_error(result.stderr)
    mail_outbox.assert_nothing_sent()


# --- 12.12: which .env ---------------------------------------------------------


def test_env_file_reads_settings_from_another_file(
    mail_outbox: Outbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--env-file FILE: its MAILER_FROM is used (the default .env is not read)."""
    monkeypatch.delenv("MAILER_FROM")
    other = tmp_path / "staging.env"
    other.write_text("MAILER_FROM='Staging <staging@example.test>'\n", encoding="utf-8")
    Path(".env").write_text("MAILER_FROM=wrong@example.test\n", encoding="utf-8")
    result = runner.invoke(
        app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--env-file", str(other)]
    )
    assert result.exit_code == 0, result.output
    assert {mail.envelope.mail_from for mail in mail_outbox} == {"staging@example.test"}


def test_a_missing_env_file_is_one_line(mail_outbox: Outbox, tmp_path: Path) -> None:
    """--env-file pointing nowhere: said, exit 2 (not silently the environment only)."""
    result = runner.invoke(
        app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--env-file", "nope.env"]
    )
    assert result.exit_code == 2
    assert one_line_error(result.stderr) == "error: --env-file nope.env: no such file"


def test_without_a_dotenv_a_missing_setting_says_none_was_found(
    mail_outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No .env here and no MAILER_FROM: the error says no .env file was found, and where."""
    monkeypatch.delenv("MAILER_FROM")
    result = runner.invoke(app, ["send", "-t", "welcome", "-r", RECIPIENTS])
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert line.startswith("error: MAILER_FROM: not set")
    assert f"no .env file in {Path.cwd()}" in line
    assert "--env-file FILE reads another" in line


def test_a_bad_value_says_which_file_set_it(mail_outbox: Outbox) -> None:
    """A bad key in .env: the error names the key and the file it came from."""
    Path(".env").write_text("MAILER_SMTP_PORT=smtp\n", encoding="utf-8")
    result = runner.invoke(app, ["send", "-t", "welcome", "-r", RECIPIENTS])
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert line.startswith("error: MAILER_SMTP_PORT: ")
    assert line.endswith(f"(set in {Path('.env').resolve()})")


def test_verbose_says_which_settings_were_read(mail_outbox: Outbox) -> None:
    """-v says up front which .env was read."""
    Path(".env").write_text("MAILER_CONCURRENCY=2\n", encoding="utf-8")
    result = runner.invoke(app, ["send", "-t", "welcome", "-r", RECIPIENTS, "-v"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(
        f"settings from {Path('.env').resolve()} and the environment"
    )


# --- 11.12: a reader that goes away ---------------------------------------------


def test_a_closed_stream_is_dropped_quietly() -> None:
    """Writes after EPIPE/EIO are dropped, and nothing is raised."""
    from mailer.cli.common import QuietWhenGone

    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            raise io.UnsupportedOperation("no descriptor")

    stream = QuietWhenGone(Gone())
    assert stream.write("summary\n") == len("summary\n")
    stream.flush()
    assert stream.is_gone
    assert stream.write("more\n") == len("more\n")


def test_other_write_errors_still_raise() -> None:
    """A full disk behind stdout is not a reader going away: it is raised."""
    from mailer.cli.common import QuietWhenGone

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        QuietWhenGone(Full()).write("x")


def test_report_lines_are_json(mail_outbox: Outbox, tmp_path: Path) -> None:
    """The report opened up front still gets one JSON line per message."""
    report = tmp_path / "r.jsonl"
    result = runner.invoke(
        app, ["send", "-t", "welcome", "-r", RECIPIENTS, "--report", str(report)]
    )
    assert result.exit_code == 0
    lines = [
        json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()
    ]
    assert [line["status"] for line in lines] == ["sent"] * 4
