"""`mailer send` as a process against a real server: hostile files, links, crashes.

Each test runs the CLI in a subprocess against SMTPTestServer on 127.0.0.1 and
attacks it the way issue 11 did: the recipients file rewritten in place
mid-run, the journal reached through a symlink or a hard link by a second
run, the journal copied without its write-ahead log after kill -9, and
Ctrl-C or kill -9 while a message is stuck before or after its content.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mailer.bulk.journal import JournalState
from mailer.bulk.status import journal_status
from mailer.testing import END_OF_DATA, SMTPTestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAILER = [sys.executable, "-m", "mailer"]
HEADER = "email,name,customer_id,plan\n"


def row(n: int, prefix: str = "user") -> str:
    return f"{prefix}{n}@example.test,User {n},C-{n},pro\n"


def write_recipients(path: Path, count: int) -> Path:
    path.write_text(HEADER + "".join(row(n) for n in range(count)), encoding="utf-8")
    return path


def environment(server: SMTPTestServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        {
            "MAILER_SMTP_HOST": server.host,
            "MAILER_SMTP_PORT": str(server.port),
            "MAILER_SMTP_TLS": "none",
            "MAILER_FROM": "shop@example.test",
            "MAILER_TEMPLATES_DIR": str(EXAMPLES / "templates"),
            "MAILER_RETRY_BACKOFF": "0.01",
            "MAILER_CONCURRENCY": "1",
        }
    )
    env.update(extra)
    return env


async def start_send(
    folder: Path, server: SMTPTestServer, *args: str, **extra: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *MAILER,
        "send",
        "-t",
        "welcome",
        "-r",
        str(folder / "recipients.csv"),
        *args,
        cwd=folder,
        env=environment(server, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def wait_for(condition: Callable[[], bool], within: float = 20.0) -> None:
    """Poll server-side state (no event to await for it)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def recipients_of(server: SMTPTestServer) -> list[str]:
    return [rcpt for mail in server.outbox for rcpt in mail.envelope.rcpt_tos]


def journal_rows(path: Path) -> dict[str, tuple[str, int]]:
    """Each message's (state, ambiguous) by address, read without changing the file."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT email, state, ambiguous FROM messages").fetchall()
    return {email: (state, ambiguous) for email, state, ambiguous in rows}


# 11.1 and 11.2: the recipients file rewritten in place under a run.


@pytest.mark.parametrize("journaled", [False, True], ids=["plain", "journal"])
async def test_a_file_rewritten_under_the_run_stops_it_and_loses_no_row(
    tmp_path: Path, journaled: bool
) -> None:
    """Rewritten mid-run: exit 2, the rest pending, no torn address, journal = mail."""
    count = 300
    recipients = write_recipients(tmp_path / "recipients.csv", count)
    journal = tmp_path / "batch.journal"
    report = tmp_path / "report.jsonl"
    args = ["--report", str(report)] + (
        ["--journal", str(journal)] if journaled else []
    )
    async with SMTPTestServer() as server:
        server.faults.delay(END_OF_DATA, 0.05)
        process = await start_send(tmp_path, server, *args)
        await wait_for(lambda: len(server.outbox) >= 3)
        # In place, shifted by a few bytes: the reader's offset lands mid-row.
        with recipients.open("r+", encoding="utf-8") as handle:
            handle.truncate(0)
            handle.write(HEADER + "".join(row(n, "u") for n in range(count)))
        code, stdout, stderr = await finish(process)
    assert code == 2, stdout + stderr  # the file is what to fix
    assert "recipients.csv changed while the batch was running" in stderr
    sent_to = recipients_of(server)
    assert set(sent_to) <= {f"user{n}@example.test" for n in range(count)}
    assert len(sent_to) == len(set(sent_to)) < count
    lines = [json.loads(x) for x in report.read_text().splitlines()]
    assert len(lines) == count  # every row has its report line
    assert sum(x["status"] == "pending" for x in lines) == count - len(sent_to)
    assert f"{len(sent_to)} sent, 0 failed, {count - len(sent_to)} pending" in stdout
    if journaled:
        states = journal_rows(journal)
        assert {e for e, (s, _) in states.items() if s == "sent"} == set(sent_to)
        assert not journal_status(journal).is_complete


# 11.4: one journal, two paths, two runs.


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
async def test_a_journal_reached_through_a_link_is_refused_while_in_use(
    tmp_path: Path, link: str
) -> None:
    """A second run through a symlink or hard link: exit 2 at once, nobody mailed twice."""
    write_recipients(tmp_path / "recipients.csv", 12)
    journal = tmp_path / "batch.journal"
    other = tmp_path / "other-name.journal"
    async with SMTPTestServer() as server:
        # The first run holds its third message at MAIL until the second ends.
        held = server.faults.delay("MAIL", 60, times=1, after=2)
        first = await start_send(tmp_path, server, "--journal", str(journal))
        await wait_for(lambda: held.fired >= 1)
        if link == "symlink":
            other.symlink_to(journal)
        else:
            os.link(journal, other)
        second = await start_send(tmp_path, server, "--journal", str(other))
        code2, _, stderr2 = await finish(second)
        server.drop_connections()  # MAIL unanswered: retried, never delivered
        code1, stdout1, _ = await finish(first)
    assert code2 == 2
    assert "in use by another mailer process" in stderr2
    assert code1 == 0, stdout1
    sent_to = recipients_of(server)
    assert sorted(sent_to) == sorted(f"user{n}@example.test" for n in range(12))


# 11.5: one file at rest; a journal without its write-ahead log is refused.


def journal_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("batch."))


async def test_the_journal_is_one_file_at_rest_after_a_run_and_after_a_stop(
    tmp_path: Path,
) -> None:
    """Finished, or stopped by Ctrl-C: the journal is batch.journal alone."""
    write_recipients(tmp_path / "recipients.csv", 12)
    journal = tmp_path / "batch.journal"
    async with SMTPTestServer() as server:
        held = server.faults.delay("MAIL", 60, times=1, after=2)
        process = await start_send(
            tmp_path,
            server,
            "--journal",
            str(journal),
            MAILER_SHUTDOWN_GRACE="0.2",
            MAILER_TIMEOUT="2",
        )
        await wait_for(lambda: held.fired >= 1)
        process.send_signal(signal.SIGINT)
        code, _, _ = await finish(process)
        assert code == 130
        assert journal_files(tmp_path) == ["batch.journal"]
        code, stdout, _ = await finish(
            await start_send(tmp_path, server, "--journal", str(journal))
        )
    assert code == 0, stdout
    assert journal_files(tmp_path) == ["batch.journal"]
    assert len(server.outbox) == 12


async def test_a_journal_copied_without_its_log_after_kill_9_is_refused(
    tmp_path: Path,
) -> None:
    """kill -9, then the main file alone resumed: refused; with its log: resumed."""
    count = 40
    write_recipients(tmp_path / "recipients.csv", count)
    journal = tmp_path / "batch.journal"
    alone, together = tmp_path / "alone", tmp_path / "together"
    async with SMTPTestServer() as server:
        held = server.faults.delay(END_OF_DATA, 60, times=1, after=10)
        process = await start_send(tmp_path, server, "--journal", str(journal))
        await wait_for(lambda: held.fired >= 1)
        process.send_signal(signal.SIGKILL)
        await finish(process)
        assert (tmp_path / "batch.journal-wal").exists()
        server.faults.clear()
        delivered = len(server.outbox)
        for folder in (alone, together):
            folder.mkdir()
            shutil.copy(tmp_path / "recipients.csv", folder)
        shutil.copy(journal, alone)
        for name in journal_files(tmp_path):
            shutil.copy(tmp_path / name, together)

        code, _, stderr = await finish(
            await start_send(alone, server, "--journal", str(alone / "batch.journal"))
        )
        assert code == 2
        [line] = stderr.splitlines()
        assert "write-ahead log (batch.journal-wal) is missing" in line
        assert len(server.outbox) == delivered  # nothing sent from stale records

        code, stdout, _ = await finish(
            await start_send(
                together, server, "--journal", str(together / "batch.journal")
            )
        )
    assert code == 0, stdout
    copies: dict[str, int] = {}
    for mail in server.outbox:
        copies[mail.envelope.rcpt_tos[0]] = copies.get(mail.envelope.rcpt_tos[0], 0) + 1
    assert len(copies) == count
    twice = {rcpt for rcpt, n in copies.items() if n > 1}
    ambiguous = {
        e for e, (_, amb) in journal_rows(together / "batch.journal").items() if amb
    }
    assert twice <= ambiguous  # a duplicate is always flagged
    assert len(ambiguous) <= 1  # concurrency 1: one message in flight at the kill


# 11.6: ambiguous only when the content may have left.


@pytest.mark.parametrize(
    ("pipelining", "stuck_at", "ambiguous"),
    [
        (True, "MAIL", False),
        (True, "DATA", False),
        (True, END_OF_DATA, True),
        (False, "MAIL", False),
        (False, "DATA", False),
        (False, END_OF_DATA, True),
    ],
    ids=[
        "pipelined-MAIL",
        "pipelined-DATA",
        "pipelined-final-reply",
        "sequential-MAIL",
        "sequential-DATA",
        "sequential-final-reply",
    ],
)
async def test_a_stop_calls_a_cut_attempt_ambiguous_only_after_its_content(
    tmp_path: Path, pipelining: bool, stuck_at: str, ambiguous: bool
) -> None:
    """Ctrl-C while stuck before the content: pending, not ambiguous; after it: both."""
    write_recipients(tmp_path / "recipients.csv", 3)
    journal = tmp_path / "batch.journal"
    async with SMTPTestServer(pipelining=pipelining) as server:
        stuck = server.faults.delay(stuck_at, 60, times=1)
        process = await start_send(
            tmp_path,
            server,
            "--journal",
            str(journal),
            MAILER_SHUTDOWN_GRACE="0.3",
            # After the cut, the stuck connection is closed by these timeouts
            # (the lanes wait for it); the cut itself comes long before.
            MAILER_TIMEOUT="2",
            MAILER_MESSAGE_TIMEOUT="3",
        )
        await wait_for(lambda: stuck.fired >= 1)
        process.send_signal(signal.SIGINT)
        code, stdout, _ = await finish(process)
        assert code == 130
        status = journal_status(journal)
        # The run's summary and `mailer status` say the same.
        assert ("1 ambiguous" in stdout) is ambiguous, stdout
        assert status.ambiguous == int(ambiguous)
        assert status.counts[JournalState.SENDING] == 0
        assert (
            status.counts[JournalState.PENDING] + status.counts[JournalState.DEFERRED]
            == 3
        )

        code, stdout, _ = await finish(
            await start_send(tmp_path, server, "--journal", str(journal))
        )
    assert code == 0, stdout
    assert sorted(recipients_of(server)) == [f"user{n}@example.test" for n in range(3)]
    assert journal_status(journal).ambiguous == int(ambiguous)


@pytest.mark.parametrize(
    ("stuck_at", "ambiguous"), [("RCPT", False), (END_OF_DATA, True)]
)
async def test_after_kill_9_a_resume_calls_ambiguous_only_what_may_have_left(
    tmp_path: Path, stuck_at: str, ambiguous: bool
) -> None:
    """kill -9 while stuck at RCPT: resent plainly; at the final reply: ambiguous."""
    write_recipients(tmp_path / "recipients.csv", 3)
    journal = tmp_path / "batch.journal"
    async with SMTPTestServer() as server:
        stuck = server.faults.delay(stuck_at, 60, times=1, after=1)
        process = await start_send(tmp_path, server, "--journal", str(journal))
        await wait_for(lambda: stuck.fired >= 1)
        process.send_signal(signal.SIGKILL)
        await finish(process)
        assert journal_status(journal).counts[JournalState.SENDING] == 1

        code, stdout, _ = await finish(
            await start_send(tmp_path, server, "--journal", str(journal))
        )
    assert code == 0, stdout
    resumed = next(x for x in stdout.splitlines() if x.startswith("resumed:"))
    if ambiguous:
        assert "1 in flight when the last run ended (ambiguous" in resumed
        assert "cut short" not in resumed
    else:
        assert "0 in flight when the last run ended" in resumed
        assert "1 cut short before their content was sent" in resumed
    assert ("1 ambiguous" in stdout) is ambiguous
    assert journal_status(journal).ambiguous == int(ambiguous)
    assert sorted(set(recipients_of(server))) == [
        f"user{n}@example.test" for n in range(3)
    ]


async def test_a_resume_never_sends_a_changed_copy_of_a_message_in_doubt(
    tmp_path: Path,
) -> None:
    """user1 kept but unanswered, terms.pdf edited: not resent until put back, then the same bytes."""
    write_recipients(tmp_path / "recipients.csv", 3)
    terms = tmp_path / "terms.pdf"
    terms.write_bytes(b"%PDF-1.4 terms v1\n")
    journal = tmp_path / "batch.journal"
    args = ("--journal", str(journal), "--attach", str(terms))
    async with SMTPTestServer() as server:
        # The server keeps user1's message and answers its dot with garbage:
        # it may have been delivered (ambiguous); one attempt only, so the
        # run ends with it still to send.
        server.faults.malformed_final_reply(times=1, after=1)
        code, stdout, _ = await finish(
            await start_send(tmp_path, server, *args, MAILER_MAX_ATTEMPTS="1")
        )
        assert journal_rows(journal)["user1@example.test"] == ("failed", 1), stdout
        [first] = [m.raw for m in server.outbox if m.to == ("user1@example.test",)]

        terms.write_bytes(b"%PDF-1.4 terms v2\n")
        code, stdout, stderr = await finish(await start_send(tmp_path, server, *args))
        assert "line 3 (user1@example.test) may have been delivered" in stderr
        assert "put them back as they were to resume" in stderr
        assert "Traceback" not in stdout + stderr
        assert code == 2  # stopped itself: the user must act
        assert journal_rows(journal)["user1@example.test"] == ("deferred", 1)
        copies = [m.raw for m in server.outbox if m.to == ("user1@example.test",)]
        assert copies == [first]  # no differing copy under user1's Message-ID

        terms.write_bytes(b"%PDF-1.4 terms v1\n")
        code, stdout, _ = await finish(await start_send(tmp_path, server, *args))
    assert code == 0, stdout
    copies = [m.raw for m in server.outbox if m.to == ("user1@example.test",)]
    assert copies == [first, first]  # the resend is byte for byte the first copy
    assert sorted(set(recipients_of(server))) == [
        f"user{n}@example.test" for n in range(3)
    ]
