"""The command line with attachments, unsubscribe links, locales and DKIM keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer.cli.app import app
from mailer.content.attachments import Attachment as FileAttachment
from mailer.testing import Attachment, Mail, Outbox, verify_dkim

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A template set, a folder of files and a file outside it."""
    templates = tmp_path / "templates"
    (templates / "invoice" / "fr").mkdir(parents=True)
    (templates / "invoice" / "subject.txt").write_text("Invoice for {{ name }}\n")
    (templates / "invoice" / "body.txt").write_text("Hello {{ name }}\n")
    (templates / "invoice" / "fr" / "subject.txt").write_text(
        "Facture pour {{ name }}\n"
    )
    (templates / "invoice" / "fr" / "body.txt").write_text("Bonjour {{ name }}\n")
    files = tmp_path / "files"
    files.mkdir()
    (files / "inv-1.pdf").write_bytes(b"%PDF-1 ann")
    (files / "inv-2.pdf").write_bytes(b"%PDF-1 bob")
    (files / "terms.pdf").write_bytes(b"%PDF-1 terms" * 1000)
    (tmp_path / "secret.txt").write_text("secret")
    (files / "link.pdf").symlink_to(tmp_path / "secret.txt")
    monkeypatch.setenv("MAILER_FROM", "Shop <shop@example.test>")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(templates))
    return tmp_path


def csv(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_attach_and_attach_column_put_the_files_on_each_message(
    project: Path, mail_outbox: Outbox
) -> None:
    """--attach goes on every message; --attach-column adds each row's own files."""
    rows = csv(
        project / "r.csv",
        "email,name,invoice,locale,unsubscribe_url\n"
        "ann@example.test,Ann,inv-1.pdf,,https://shop.example.test/u/ann\n"
        "bob@example.test,Bob,inv-2.pdf; inv-1.pdf,fr,\n",
    )
    result = runner.invoke(
        app,
        [
            "send",
            "-t",
            "invoice",
            "-r",
            rows,
            "--attach",
            str(project / "files/terms.pdf"),
            "--attach-column",
            "invoice",
            "--attachments-dir",
            str(project / "files"),
        ],
    )
    assert result.exit_code == 0, result.output
    ann, bob = sorted(mail_outbox, key=lambda m: m.to[0])
    assert ann == Mail(
        subject="Invoice for Ann",
        attachments=[
            Attachment(filename="terms.pdf", size=12000),
            Attachment(content=b"%PDF-1 ann"),
        ],
        headers={
            "List-Unsubscribe": "<https://shop.example.test/u/ann>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    assert bob == Mail(
        subject="Facture pour Bob",
        attachments=["terms.pdf", "inv-2.pdf", "inv-1.pdf"],
        headers={"List-Unsubscribe": None},
    )


@pytest.mark.parametrize(
    ("cell", "error"),
    [
        (
            "../secret.txt",
            "line 2: invoice: '../secret.txt' leaves the attachments directory",
        ),
        (
            "/etc/passwd",
            "line 2: invoice: '/etc/passwd' leaves the attachments directory",
        ),
        (
            "link.pdf",
            "line 2: invoice: 'link.pdf' points outside the attachments directory",
        ),
        ("missing.pdf", "line 2: invoice: 'missing.pdf': no such file in"),
    ],
)
def test_a_bad_attachment_path_is_a_bad_row_and_nothing_is_sent(
    project: Path, mail_outbox: Outbox, cell: str, error: str
) -> None:
    """Path escapes and missing files: exit 2 before sending, with the line number."""
    rows = csv(
        project / "r.csv",
        f"email,name,invoice\nann@example.test,Ann,{cell}\nbob@example.test,Bob,inv-2.pdf\n",
    )
    result = runner.invoke(
        app,
        [
            "send",
            "-t",
            "invoice",
            "-r",
            rows,
            "--attach-column",
            "invoice",
            "--attachments-dir",
            str(project / "files"),
        ],
    )
    assert result.exit_code == 2
    assert error in result.stderr
    assert "Traceback" not in result.output
    assert len(mail_outbox) == 0


def test_attachments_over_the_size_limit_are_refused_before_sending(
    project: Path, mail_outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attachment over MAILER_MAX_MESSAGE_SIZE makes the row bad: exit 2, nothing sent."""
    monkeypatch.setenv("MAILER_MAX_MESSAGE_SIZE", "10000")
    rows = csv(project / "r.csv", "email,name\nann@example.test,Ann\n")
    result = runner.invoke(
        app,
        [
            "send",
            "-t",
            "invoice",
            "-r",
            rows,
            "--attach",
            str(project / "files/terms.pdf"),
        ],
    )
    assert result.exit_code == 2
    assert (
        "line 2: size: the attachments are 16,420 bytes once encoded, over MAILER_MAX_MESSAGE_SIZE=10,000"
        in result.stderr
    )
    assert len(mail_outbox) == 0


def test_a_missing_attach_file_is_a_usage_error(
    project: Path, mail_outbox: Outbox
) -> None:
    """--attach naming no file: one line, exit 2."""
    rows = csv(project / "r.csv", "email,name\nann@example.test,Ann\n")
    result = runner.invoke(
        app, ["send", "-t", "invoice", "-r", rows, "--attach", "nope.pdf"]
    )
    assert result.exit_code == 2
    assert result.stderr == "error: --attach: 'nope.pdf' is not a file\n"


def test_a_non_https_unsubscribe_url_is_a_bad_row(
    project: Path, mail_outbox: Outbox
) -> None:
    """unsubscribe_url with http:// is refused per row, before sending."""
    rows = csv(
        project / "r.csv",
        "email,name,unsubscribe_url\nann@example.test,Ann,http://shop.example.test/u\n",
    )
    result = runner.invoke(app, ["send", "-t", "invoice", "-r", rows])
    assert result.exit_code == 2
    assert (
        "line 2: unsubscribe: one-click unsubscribe needs an https URL" in result.stderr
    )
    assert len(mail_outbox) == 0


def test_dry_run_and_preview_list_attachments_with_sizes(
    project: Path, mail_outbox: Outbox
) -> None:
    """--dry-run lists each distinct set of files once; preview lists the row's files."""
    rows = csv(
        project / "r.csv",
        "email,name,invoice\nann@example.test,Ann,inv-1.pdf\nbob@example.test,Bob,inv-1.pdf\ncy@example.test,Cy,\n",
    )
    options = [
        "-r",
        rows,
        "--attach-column",
        "invoice",
        "--attachments-dir",
        str(project / "files"),
    ]
    result = runner.invoke(app, ["send", "-t", "invoice", "--dry-run", *options])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "line 2: attachments: inv-1.pdf (10 B)",
        "dry run: 3 message(s) would be sent, 0 invalid row(s); nothing was sent",
    ]
    preview = runner.invoke(app, ["preview", "-t", "invoice", *options])
    assert preview.exit_code == 0, preview.output
    assert "Attachments: inv-1.pdf (10 B)" in preview.stdout
    assert len(mail_outbox) == 0


def test_keygen_writes_a_private_key_and_prints_the_record(
    project: Path, mail_outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mailer dkim keygen` writes a mode-600 key; the printed record verifies its signatures."""
    monkeypatch.chdir(project)
    result = runner.invoke(
        app,
        [
            "dkim",
            "keygen",
            "--selector",
            "s1",
            "--domain",
            "example.test",
            "--algorithm",
            "ed25519",
        ],
    )
    assert result.exit_code == 0, result.output
    key_file = project / "s1.example.test.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert 's1._domainkey.example.test. IN TXT "v=DKIM1; k=ed25519; p=' in result.stdout
    record = next(
        line for line in result.stdout.splitlines() if line.startswith("v=DKIM1")
    )
    assert "BEGIN PRIVATE KEY" not in result.stdout
    # The key works as MAILER_DKIM_PRIVATE_KEY_FILE, and the record verifies.
    monkeypatch.setenv("MAILER_DKIM_DOMAIN", "example.test")
    monkeypatch.setenv("MAILER_DKIM_SELECTOR", "s1")
    monkeypatch.setenv("MAILER_DKIM_PRIVATE_KEY_FILE", str(key_file))
    rows = csv(project / "r.csv", "email,name\nann@example.test,Ann\n")
    assert runner.invoke(app, ["send", "-t", "invoice", "-r", rows]).exit_code == 0
    verify_dkim(mail_outbox.last, record)
    again = runner.invoke(
        app, ["dkim", "keygen", "--selector", "s1", "--domain", "example.test"]
    )
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.stderr


def test_rsa_record_is_split_into_255_character_strings(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2048-bit RSA record is longer than one TXT string: it is split for the zone file."""
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["dkim", "keygen", "-s", "s2", "-d", "example.test"])
    assert result.exit_code == 0, result.output
    zone = next(line for line in result.stdout.splitlines() if "IN TXT" in line)
    strings = zone.split("IN TXT ")[1].split('" "')
    assert len(strings) == 2
    assert all(len(s.strip('"')) <= 255 for s in strings)


def test_a_malformed_dkim_key_stops_the_command_with_one_line(
    project: Path, mail_outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken key file: exit 2, one line naming the setting, nothing sent, no key text."""
    key = project / "bad.pem"
    key.write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAAsecretish\n-----END PRIVATE KEY-----\n"
    )
    monkeypatch.setenv("MAILER_DKIM_DOMAIN", "example.test")
    monkeypatch.setenv("MAILER_DKIM_SELECTOR", "s1")
    monkeypatch.setenv("MAILER_DKIM_PRIVATE_KEY_FILE", str(key))
    rows = csv(project / "r.csv", "email,name\nann@example.test,Ann\n")
    result = runner.invoke(app, ["send", "-t", "invoice", "-r", rows])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: MAILER_DKIM_PRIVATE_KEY_FILE: not an unencrypted PEM private key"
    )
    assert result.stderr.count("\n") == 1
    assert "secretish" not in result.output
    assert len(mail_outbox) == 0


async def test_a_batch_encodes_a_shared_attachment_once(
    project: Path, mail_outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 rows sharing one file: read and encoded once for the whole batch."""
    from mailer import MailerSettings, RowAttachments, send_messages

    builds = 0
    real = FileAttachment._build_part

    def counting(self: FileAttachment) -> tuple[bytes, bytes]:
        nonlocal builds
        builds += 1
        return real(self)

    monkeypatch.setattr(FileAttachment, "_build_part", counting)
    rows = [{"email": f"r{n}@example.test", "name": f"R{n}"} for n in range(200)]
    files = RowAttachments.from_paths([project / "files" / "terms.pdf"])
    report = await send_messages(
        "invoice", rows, settings=MailerSettings(_env_file=None), attachments=files
    )
    assert report.sent == 200
    assert builds == 1
    assert all(m.attachments[0].size == 12000 for m in mail_outbox)
