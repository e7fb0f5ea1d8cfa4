"""Sender processes send a spooled batch on every core (issue 14).

After the check pass, a batch of more than one chunk is sent by forked sender
processes, each with its share of MAILER_CONCURRENCY. These tests send to a
real SMTP server on 127.0.0.1 (in this process: it sees every connection of
every sender) and check that the senders send what one process sends, that a
stop, a Ctrl-C or a killed sender leaves every row sent, failed or pending
(never twice, never lost, no hang, no process left), and that the batches
that must stay in one process do.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mailer.bulk.senders as senders
import mailer.bulk.spool as spool_module
from mailer import MailerSettings, RecipientFile, SendStatus, send_messages
from mailer.bulk.report import BatchReport
from mailer.delivery.control import StopEvent
from mailer.testing import END_OF_DATA, SMTPTestServer, capture_mail
from mailer.testing.server.protocol import FaultySMTP

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAILER = [sys.executable, "-m", "mailer"]
Settings = Callable[..., MailerSettings]


def rows_file(folder: Path, count: int) -> Path:
    """Write ``count`` rows for the welcome template."""
    path = folder / "rows.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            writer.writerow([f"user{n}@example.test", f"User {n}", f"C-{n}", "pro"])
    return path


class Started:
    """Count the sender processes started from now on."""

    def __init__(self) -> None:
        self.before = len(senders.STARTED_PIDS)

    @property
    def pids(self) -> list[int]:
        """Return the pids started since this object was made."""
        return senders.STARTED_PIDS[self.before :]


@pytest.fixture
def peak_connections(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Return the most connections the test servers had open at once."""
    open_now = peak = 0
    made = FaultySMTP.connection_made
    lost = FaultySMTP.connection_lost

    def connection_made(self: FaultySMTP, transport: Any) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        made(self, transport)

    def connection_lost(self: FaultySMTP, error: Exception | None) -> None:
        nonlocal open_now
        open_now -= 1
        lost(self, error)

    monkeypatch.setattr(FaultySMTP, "connection_made", connection_made)
    monkeypatch.setattr(FaultySMTP, "connection_lost", connection_lost)
    return lambda: peak


def is_gone(pid: int) -> bool:
    """Return whether no process has ``pid`` (or it is a zombie nobody reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_gone(pids: list[int], within: float = 20.0) -> None:
    """Wait until none of ``pids`` runs."""
    async with asyncio.timeout(within):
        while not all(is_gone(pid) for pid in pids):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.02)


def accounted(report: BatchReport, count: int) -> None:
    """Check that each of ``count`` rows has exactly one result, in row order."""
    assert [r.to for r in report.results] == [
        (f"user{n}@example.test",) for n in range(count)
    ]


async def test_sender_processes_send_what_one_process_sends(
    tmp_path: Path, settings_for: Settings, peak_connections: Callable[[], int]
) -> None:
    """Two senders: every row once, report in row order, 5 connections at most."""
    rows = rows_file(tmp_path, 1300)  # six chunks
    started = Started()
    async with SMTPTestServer() as server:
        report = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=2, concurrency=5),
        )
        mail = list(server.outbox)
        server.outbox.clear()
        alone = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=1, concurrency=5),
        )
    assert len(started.pids) == 2  # the second batch started none
    accounted(report, 1300)
    accounted(alone, 1300)
    assert report.sent == alone.sent == 1300
    received = Counter(r for m in mail for r in m.envelope.rcpt_tos)
    assert sorted(received) == sorted(f"user{n}@example.test" for n in range(1300))
    assert set(received.values()) == {1}
    ids = {r.message_id for r in report.results}
    assert len(ids) == 1300
    assert ids == {m.message_id for m in mail}
    assert 2 <= peak_connections() <= 5
    await wait_gone(started.pids)


async def test_each_sender_opens_its_share_of_the_connections(
    tmp_path: Path, settings_for: Settings, peak_connections: Callable[[], int]
) -> None:
    """MAILER_CONCURRENCY=3 over two senders: never more than 3 connections."""
    rows = rows_file(tmp_path, 1300)
    started = Started()
    async with SMTPTestServer() as server:
        # Slow replies: every sender has all its connections busy at once.
        server.faults.delay(END_OF_DATA, 0.01)
        report = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=4, concurrency=3),
        )
    assert len(started.pids) == 3  # min(workers, concurrency)
    assert report.sent == 1300
    assert peak_connections() == 3


async def test_a_stop_mid_batch_leaves_every_row_sent_or_pending_once(
    tmp_path: Path, settings_for: Settings
) -> None:
    """The stop while senders send: each row sent or pending once, the senders gone."""
    rows = rows_file(tmp_path, 3000)
    stop = StopEvent()
    started = Started()
    seen = 0

    def count(_: object) -> None:
        nonlocal seen
        seen += 1
        if seen == 300:
            stop.set_reason("interrupted (test)")

    async with SMTPTestServer() as server:
        server.faults.delay(END_OF_DATA, 0.005)
        report = await asyncio.wait_for(
            send_messages(
                "welcome",
                RecipientFile(rows),
                settings=settings_for(server, workers=2),
                stop=stop,
                on_result=count,
            ),
            timeout=120,
        )
        mail = list(server.outbox)
    assert len(started.pids) == 2
    accounted(report, 3000)
    statuses = Counter(r.status for r in report.results)
    assert statuses[SendStatus.FAILED] == 0
    assert 300 <= statuses[SendStatus.SENT] < 3000
    assert statuses[SendStatus.SENT] + statuses[SendStatus.PENDING] == 3000
    sent = sorted(r.to[0] for r in report.results if r.is_sent)
    assert sorted(r for m in mail for r in m.envelope.rcpt_tos) == sent
    reasons = {r.error for r in report.results if r.status is SendStatus.PENDING}
    assert reasons <= {
        "not sent: interrupted (test)",
        "not sent: abandoned at shutdown",
    }
    await wait_gone(started.pids)


async def start_cli(
    server: SMTPTestServer, rows: Path, report: Path, **settings: str
) -> asyncio.subprocess.Process:
    """Start ``mailer send`` to ``server`` in its own process group, two workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env |= settings
    env |= {
        "MAILER_SMTP_HOST": server.host,
        "MAILER_SMTP_PORT": str(server.port),
        "MAILER_SMTP_TLS": "none",
        "MAILER_FROM": "shop@example.test",
        "MAILER_TEMPLATES_DIR": str(EXAMPLES / "templates"),
        "MAILER_WORKERS": "2",
    }
    return await asyncio.create_subprocess_exec(
        *MAILER,
        "send",
        "-t",
        "welcome",
        "-r",
        str(rows),
        "--report",
        str(report),
        cwd=rows.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as in a terminal
    )


async def wait_for_mail(server: SMTPTestServer, count: int) -> None:
    """Wait until the server has received ``count`` messages."""
    async with asyncio.timeout(60):
        while len(server.outbox) < count:  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["int", "term", "hup"]
)
async def test_a_signal_to_the_process_group_while_senders_send(
    tmp_path: Path, signum: int
) -> None:
    """Ctrl-C, systemctl stop, a closed terminal: a graceful stop, each row once, no sender left."""
    rows = rows_file(tmp_path, 4000)
    report_path = tmp_path / "report.jsonl"
    async with SMTPTestServer() as server:
        server.faults.delay(END_OF_DATA, 0.005)
        process = await start_cli(server, rows, report_path)
        await wait_for_mail(server, 200)
        children = children_of(process.pid)
        os.killpg(process.pid, signum)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        mail = list(server.outbox)
    text = stderr.decode()
    assert process.returncode == 128 + signum, text
    assert "ended unexpectedly" not in text  # no sender died of it
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text
    assert len(children) == 2  # the senders (the check pass's workers are gone)
    await wait_gone(children)
    lines = [json.loads(line) for line in report_path.read_text().splitlines()]
    by_line = Counter(line["line"] for line in lines)
    assert sorted(by_line) == list(range(2, 4002))
    assert set(by_line.values()) == {1}
    sent = sorted(line["to"] for line in lines if line["status"] == "sent")
    assert sorted(r for m in mail for r in m.envelope.rcpt_tos) == sent
    assert {line["status"] for line in lines} == {"sent", "pending"}
    assert not any(line.get("ambiguous") for line in lines)  # all given their grace


@pytest.mark.parametrize("how", ["second_ctrl_c", "parent_killed"])
async def test_no_sender_outlives_a_parent_that_quits_at_once(
    tmp_path: Path, how: str
) -> None:
    """A second Ctrl-C, or the CLI killed: its senders end at once, mid-batch."""
    rows = rows_file(tmp_path, 4000)
    async with SMTPTestServer() as server:
        # No reply for a minute: a sender left alone would wait that long,
        # with nothing to report (a report to a dead parent ends a sender).
        server.faults.delay(END_OF_DATA, 60)
        process = await start_cli(
            server,
            rows,
            tmp_path / "report.jsonl",
            MAILER_TIMEOUT="60",
            MAILER_SHUTDOWN_GRACE="60",
        )
        # One connection per sender: until a first message has gone through,
        # a batch tries one at a time.
        async with asyncio.timeout(60):
            while server.active_sessions < 2:  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.01)
        children = children_of(process.pid)
        if how == "second_ctrl_c":
            os.killpg(process.pid, signal.SIGINT)
            await asyncio.sleep(0.2)
            os.kill(process.pid, signal.SIGINT)
        else:
            os.kill(process.pid, signal.SIGKILL)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert len(children) == 2
        await wait_gone(children, within=10)
    if how == "second_ctrl_c":
        assert process.returncode == 130
        assert "quitting now" in stderr.decode()
        assert "Traceback" not in stderr.decode()
    else:
        assert process.returncode == -signal.SIGKILL


def children_of(pid: int) -> list[int]:
    """Return the pids of ``pid``'s child processes (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


async def test_a_sender_killed_mid_batch_leaves_its_rows_pending_and_ends(
    tmp_path: Path, settings_for: Settings
) -> None:
    """SIGKILL to a sender: its unreported rows pending (may have been sent), no hang."""
    rows = rows_file(tmp_path, 3000)
    started = Started()
    killed: list[int] = []
    seen = 0

    def kill_one(_: object) -> None:
        nonlocal seen
        seen += 1
        if seen == 300:
            killed.append(started.pids[0])
            os.kill(started.pids[0], signal.SIGKILL)

    async with SMTPTestServer() as server:
        server.faults.delay(END_OF_DATA, 0.005)
        report = await asyncio.wait_for(
            send_messages(
                "welcome",
                RecipientFile(rows),
                settings=settings_for(server, workers=2),
                on_result=kill_one,
            ),
            timeout=120,
        )
        mail = list(server.outbox)
    accounted(report, 3000)
    received = Counter(r for m in mail for r in m.envelope.rcpt_tos)
    assert set(received.values()) == {1}  # nothing sent twice
    died = [r for r in report.results if r.error and f"process {killed[0]}" in r.error]
    assert died
    assert all(r.status is SendStatus.PENDING for r in died)
    assert any("killed by SIGKILL" in r.error for r in died if r.error)
    # Each sent row was received; a row received and not reported sent is
    # one the killed sender sent and could not report: "may have been sent".
    for result in report.results:
        address = result.to[0]
        if result.error and "before its turn" in result.error:
            assert address not in received  # never taken: surely not sent
        if result.is_sent:
            assert received[address] == 1
        elif address in received:
            assert result.ambiguous
            assert result.error is not None
            assert "may have been sent" in result.error
    assert report.sent < 3000
    await wait_gone(started.pids)


async def test_refusals_in_a_sender_come_back_with_the_servers_reply(
    tmp_path: Path, settings_for: Settings
) -> None:
    """A 550 and a 421 met by senders reach the report with the server's replies."""
    rows = rows_file(tmp_path, 1300)
    started = Started()
    async with SMTPTestServer() as server:
        server.faults.reply(
            "RCPT", 550, "5.1.1 no such user", recipient="user700@example.test"
        )
        server.faults.reply(
            "RCPT", 421, "4.3.2 try later", recipient="user1100@example.test"
        )
        report = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=2, max_attempts=1),
        )
    assert len(started.pids) == 2
    accounted(report, 1300)
    refused, later = report.results[700], report.results[1100]
    assert refused.status is SendStatus.FAILED
    assert refused.refused["user700@example.test"].code == 550
    assert later.status is SendStatus.FAILED
    assert later.reply is not None
    assert later.reply.code == 421
    assert "try later" in later.reply.text
    assert report.sent == 1298


async def test_a_timeout_in_a_sender_comes_back_as_a_failure(
    tmp_path: Path, settings_for: Settings
) -> None:
    """A server silent past the timeout, met by a sender: that row failed, the rest sent."""
    rows = rows_file(tmp_path, 600)
    started = Started()
    async with SMTPTestServer() as server:
        server.faults.delay("RCPT", 30, recipient="user500@example.test")
        report = await asyncio.wait_for(
            send_messages(
                "welcome",
                RecipientFile(rows),
                settings=settings_for(server, workers=2, max_attempts=1, timeout=1),
            ),
            timeout=60,
        )
    assert len(started.pids) == 2
    accounted(report, 600)
    slow = report.results[500]
    assert slow.status is SendStatus.FAILED
    assert slow.error is not None
    assert "did not answer in time" in slow.error
    assert report.sent == 599


async def test_a_file_changed_under_the_senders_stops_them_the_rest_pending(
    tmp_path: Path, settings_for: Settings
) -> None:
    """The recipients file rewritten mid-run: every sender stops, the rest pending."""
    rows = rows_file(tmp_path, 3000)
    started = Started()
    seen = 0

    def rewrite(_: object) -> None:
        nonlocal seen
        seen += 1
        if seen == 100:
            with rows.open("a", encoding="utf-8") as handle:
                handle.write("late@example.test,Late,C-x,pro\n")

    async with SMTPTestServer() as server:
        server.faults.delay(END_OF_DATA, 0.005)
        report = await asyncio.wait_for(
            send_messages(
                "welcome",
                RecipientFile(rows),
                settings=settings_for(server, workers=2),
                on_result=rewrite,
            ),
            timeout=120,
        )
        mail = list(server.outbox)
    assert len(started.pids) == 2
    accounted(report, 3000)
    sent = sorted(r.to[0] for r in report.results if r.is_sent)
    assert sorted(r for m in mail for r in m.envelope.rcpt_tos) == sent
    assert 100 <= len(sent) < 1000
    reasons = {r.error for r in report.results if not r.is_sent}
    assert len(reasons) == 1
    (reason,) = reasons
    assert reason is not None
    assert "changed while the batch was running" in reason
    await wait_gone(started.pids)


@pytest.mark.parametrize(
    "case", ["journal", "rate_limit", "one_chunk", "workers_1", "concurrency_1"]
)
async def test_batches_that_must_stay_in_one_process_start_no_sender(
    tmp_path: Path, settings_for: Settings, case: str
) -> None:
    """A journal, a rate limit, one chunk, --workers 1, one connection: no sender."""
    count = 200 if case == "one_chunk" else 600
    rows = rows_file(tmp_path, count)
    options: dict[str, Any] = {"workers": 2}
    if case == "rate_limit":
        options["rate_limit"] = "100000/s"
    if case == "workers_1":
        options["workers"] = 1
    if case == "concurrency_1":
        options["concurrency"] = 1
    started = Started()
    async with SMTPTestServer() as server:
        report = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, **options),
            journal=tmp_path / "batch.journal" if case == "journal" else None,
        )
        received = len(server.outbox)
    assert started.pids == []
    assert report.sent == received == count


async def test_use_transport_keeps_the_batch_and_its_outbox_in_this_process(
    tmp_path: Path, settings_for: Settings
) -> None:
    """capture_mail (use_transport): no sender; its outbox sees every message."""
    rows = rows_file(tmp_path, 700)
    started = Started()
    with capture_mail() as outbox:
        report = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(12345, workers=2, from_="shop@example.test"),
        )
    assert started.pids == []
    assert report.sent == 700
    assert len(outbox) == 700


async def test_repeats_unpreparable_and_unspooled_rows_end_as_in_one_process(
    tmp_path: Path, settings_for: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dedupe repeats, rows over the size limit and rows rendered at their turn, in senders."""
    path = tmp_path / "rows.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(900):
            email = f"user{n % 800}@example.test"  # rows 800.. repeat 0..99
            # Rows 300..304 carry 40 kB: over the size limit, failed unsent.
            customer = "C" * 40_000 if 300 <= n < 305 else f"C-{n}"
            writer.writerow([email, f"User {n}", customer, "pro"])

    async def run(workers: int) -> BatchReport:
        async with SMTPTestServer() as server:
            report = await send_messages(
                "welcome",
                RecipientFile(path),
                settings=settings_for(server, workers=workers, max_message_size=30_000),
                dedupe=True,
            )
            received = sorted(r for m in server.outbox for r in m.envelope.rcpt_tos)
        sent = sorted(r.to[0] for r in report.results if r.is_sent)
        assert received == sent
        return report

    started = Started()
    alone = await run(1)
    assert started.pids == []
    # Every message is over the spool's limit: each is rendered again by a sender.
    monkeypatch.setattr(spool_module, "SPOOLED_SIZE_LIMIT", 10)
    pooled = await run(2)
    assert len(started.pids) == 2
    for report in (alone, pooled):
        assert report.duplicates == 100
        assert report.failed == 5
        assert report.sent == 795
    assert [(r.to, r.status, r.error) for r in pooled.results] == [
        (r.to, r.status, r.error) for r in alone.results
    ]
    failed = [r for r in pooled.results if r.status is SendStatus.FAILED]
    assert [r.to[0] for r in failed] == [
        f"user{n}@example.test" for n in range(300, 305)
    ]
    assert all(r.attempts == 0 for r in failed)  # never tried: unsent
