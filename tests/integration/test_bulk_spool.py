"""A batch renders each row once, in one process or in worker processes (issue 14).

The check pass renders, validates and prepares every row into the spool;
the send pass sends the spooled bytes. These tests count the rendering and
serialising, and compare what worker processes send with what one process
sends, against a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

import mailer.bulk.sending as sending
import mailer.delivery.prepare as prepare
from mailer import InvalidRecipientsError, MailerSettings, RecipientFile, send_messages
from mailer.bulk.identity import CheckedRows
from mailer.bulk.spool import Spool
from mailer.bulk.workers import WorkerError, WorkerPool
from mailer.delivery.client import MessageClient
from mailer.templates.sets import load_template_set
from mailer.testing import END_OF_DATA, SMTPTestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAILER = [sys.executable, "-m", "mailer"]
Settings = Callable[..., MailerSettings]


def rows_file(folder: Path, count: int, bad: int | None = None) -> Path:
    """Write ``count`` rows; row ``bad`` (0-based) lacks its customer_id."""
    path = folder / "rows.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            customer = "" if n == bad else f"C-{n}"
            writer.writerow([f"user{n}@example.test", f"User {n}", customer, "pro"])
    return path


class Counter:
    """Wrap a function and count its calls in this process."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> tuple[Counter, Counter]:
    """Count the renders (render_set) and serialisations (serialize_message)."""
    renders = Counter(sending.render_set)
    serialised = Counter(prepare.serialize_message)
    monkeypatch.setattr(sending, "render_set", renders)
    monkeypatch.setattr(prepare, "serialize_message", serialised)
    return renders, serialised


@pytest.mark.parametrize("journaled", [False, True], ids=["plain", "journal"])
async def test_each_row_is_rendered_and_serialised_once(
    tmp_path: Path,
    settings_for: Settings,
    counted: tuple[Counter, Counter],
    journaled: bool,
) -> None:
    """One process: 300 rows, 300 renders and 300 serialisations, 300 messages."""
    renders, serialised = counted
    rows = rows_file(tmp_path, 300)
    async with SMTPTestServer() as server:
        report = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=1),
            journal=tmp_path / "batch.journal" if journaled else None,
        )
    assert report.sent == 300
    assert len(server.outbox) == 300
    assert renders.calls == 300
    assert serialised.calls == 300


async def test_worker_processes_send_what_one_process_sends_in_the_same_order(
    tmp_path: Path, settings_for: Settings, counted: tuple[Counter, Counter]
) -> None:
    """Two workers: no render here, the report in row order, the same bodies as one process."""
    renders, _ = counted
    rows = rows_file(tmp_path, 700)  # three chunks: the pool starts
    async with SMTPTestServer() as server:
        pooled = await send_messages(
            "welcome", RecipientFile(rows), settings=settings_for(server, workers=2)
        )
        rendered_here = renders.calls
        pooled_mail = list(server.outbox)
        server.outbox.clear()
        alone = await send_messages(
            "welcome", RecipientFile(rows), settings=settings_for(server, workers=1)
        )
        alone_mail = list(server.outbox)
    assert rendered_here == 0  # every row was rendered in a worker
    assert renders.calls == 700
    expected = [f"user{n}@example.test" for n in range(700)]
    assert [r.to for r in pooled.results] == [(e,) for e in expected]
    assert [r.to for r in alone.results] == [(e,) for e in expected]
    assert pooled.sent == alone.sent == 700

    def bodies(mail: list[Any]) -> dict[str, str]:
        out = {}
        for item in mail:
            parsed = message_from_bytes(item.raw)
            out[item.envelope.rcpt_tos[0]] = parsed["Subject"] + str(
                [
                    part.get_payload()
                    for part in parsed.walk()
                    if not part.is_multipart()
                ]
            )
        return out

    pooled_bodies = bodies(pooled_mail)
    assert sorted(pooled_bodies) == sorted(expected)
    # Boundaries derive from the Message-ID: compare what each part says.
    assert {k: len(v) for k, v in pooled_bodies.items()} == {
        k: len(v) for k, v in bodies(alone_mail).items()
    }
    ids = {r.message_id for r in pooled.results}
    assert len(ids) == 700  # forked workers do not share a random state


async def test_a_bad_row_found_by_a_worker_stops_the_batch_before_anything_is_sent(
    tmp_path: Path, settings_for: Settings
) -> None:
    """Row 650 of 700 lacks a value: InvalidRecipientsError naming its line, nothing sent."""
    rows = rows_file(tmp_path, 700, bad=650)
    async with SMTPTestServer() as server:
        with pytest.raises(InvalidRecipientsError) as raised:
            await send_messages(
                "welcome",
                RecipientFile(rows),
                settings=settings_for(server, workers=2),
            )
        server.outbox.assert_nothing_sent()
    assert [row.line for row in raised.value.rows] == [652]  # header + 0-based
    assert "customer_id" in raised.value.rows[0].error


async def test_a_journal_filled_by_workers_holds_every_row_once(
    tmp_path: Path, settings_for: Settings
) -> None:
    """Workers and a journal: every row sent once; a second run sends nothing more."""
    rows = rows_file(tmp_path, 600)
    journal = tmp_path / "batch.journal"
    async with SMTPTestServer() as server:
        first = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=2),
            journal=journal,
        )
        again = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=2),
            journal=journal,
        )
    assert first.sent == 600
    sent_to = sorted(r for m in server.outbox for r in m.envelope.rcpt_tos)
    assert sent_to == sorted(f"user{n}@example.test" for n in range(600))
    assert again.resumed is not None
    assert len(server.outbox) == 600  # the resume found everything sent


async def test_a_stop_during_a_pooled_check_ends_it_with_nothing_sent(
    tmp_path: Path, settings_for: Settings
) -> None:
    """The stop set while workers check: the batch ends, nothing sent, the pool gone."""
    rows = rows_file(tmp_path, 20_000)
    stop = asyncio.Event()
    pools: list[WorkerPool] = []
    original = WorkerPool.__init__

    def record(self: WorkerPool, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        pools.append(self)
        asyncio.get_running_loop().call_later(0.3, stop.set)

    async with SMTPTestServer() as server:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(WorkerPool, "__init__", record)
            report = await asyncio.wait_for(
                send_messages(
                    "welcome",
                    RecipientFile(rows),
                    settings=settings_for(server, workers=2),
                    stop=stop,
                ),
                timeout=60,
            )
        server.outbox.assert_nothing_sent()
    assert report.total == 0
    assert len(pools) == 1
    processes = pools[0]._pool._processes  # private: are they gone?
    assert not processes


async def test_ctrl_c_to_the_process_group_stops_a_pooled_check_quietly(
    tmp_path: Path,
) -> None:
    """SIGINT to the CLI and its workers (a terminal's Ctrl-C): exit 130, nothing sent, no traceback."""
    rows = rows_file(tmp_path, 60_000)
    async with SMTPTestServer() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        env |= {
            "MAILER_SMTP_HOST": server.host,
            "MAILER_SMTP_PORT": str(server.port),
            "MAILER_SMTP_TLS": "none",
            "MAILER_FROM": "shop@example.test",
            "MAILER_TEMPLATES_DIR": str(EXAMPLES / "templates"),
            "MAILER_WORKERS": "2",
        }
        process = await asyncio.create_subprocess_exec(
            *MAILER,
            "send",
            "-t",
            "welcome",
            "-r",
            str(rows),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, as in a terminal
        )
        await wait_for_children(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        server.outbox.assert_nothing_sent()
    text = stderr.decode()
    assert process.returncode == 130, text
    assert "stopped during the check pass" in text
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text
    assert stdout == b""


async def wait_for_children(pid: int, within: float = 30.0) -> None:
    """Wait until the process has forked its workers (read from /proc)."""
    async with asyncio.timeout(within):
        while not children_of(pid):  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.02)


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


async def test_a_resume_resends_a_worker_built_message_byte_for_byte(
    tmp_path: Path, settings_for: Settings
) -> None:
    """A message built in a worker and left in doubt is rebuilt by the resume: the same bytes."""
    rows = rows_file(tmp_path, 600)
    journal = tmp_path / "batch.journal"
    async with SMTPTestServer() as server:
        # The first message is kept, then its reply lost: in doubt, one attempt.
        server.faults.disconnect(after=END_OF_DATA, keep=True, times=1)
        first = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=2, max_attempts=1),
            journal=journal,
        )
        resumed = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=2),
            journal=journal,
        )
        mail = list(server.outbox)
    assert first.sent == 599
    assert resumed.sent == 600
    by_id: dict[str | None, list[Any]] = {}
    for item in mail:
        by_id.setdefault(item.message_id, []).append(item)
    (twice,) = [items for items in by_id.values() if len(items) == 2]
    assert twice[0].raw == twice[1].raw
    assert len(mail) == 601


async def test_bad_rows_met_by_workers_are_listed_and_the_rest_sent_with_skip_invalid(
    tmp_path: Path, settings_for: Settings
) -> None:
    """--skip-invalid with workers: a row without an address and one without a value are listed; 698 sent."""
    rows = rows_file(tmp_path, 700, bad=500)
    text = rows.read_text(encoding="utf-8").replace("user300@example.test", "")
    rows.write_text(text, encoding="utf-8")
    async with SMTPTestServer() as server:
        report = await send_messages(
            "welcome",
            RecipientFile(rows),
            settings=settings_for(server, workers=2),
            skip_invalid=True,
        )
    assert [row.line for row in report.invalid_rows] == [302, 502]
    assert report.sent == 698
    assert len(server.outbox) == 698


async def test_a_worker_killed_during_the_check_ends_the_batch_with_nothing_sent(
    tmp_path: Path, settings_for: Settings
) -> None:
    """SIGKILL to a worker: WorkerError naming --workers 1, nothing sent, no hang."""
    rows = rows_file(tmp_path, 20_000)
    original = WorkerPool.__init__

    def kill_one_soon(self: WorkerPool, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)

        def kill() -> None:
            processes = self._pool._processes  # private: the forked workers
            assert processes
            os.kill(next(iter(processes)), signal.SIGKILL)

        asyncio.get_running_loop().call_later(0.3, kill)

    async with SMTPTestServer() as server:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(WorkerPool, "__init__", kill_one_soon)
            with pytest.raises(WorkerError) as raised:
                await asyncio.wait_for(
                    send_messages(
                        "welcome",
                        RecipientFile(rows),
                        settings=settings_for(server, workers=2),
                    ),
                    timeout=60,
                )
        server.outbox.assert_nothing_sent()
    assert "--workers 1" in str(raised.value)


async def test_a_pool_found_broken_when_handing_out_a_chunk_is_a_worker_error(
    tmp_path: Path, settings_for: Settings
) -> None:
    """A worker dead before the next chunk is handed out: WorkerError, not BrokenProcessPool."""
    rows = rows_file(tmp_path, 600)
    server_settings = settings_for(12345, workers=2, from_="shop@example.test")
    client = MessageClient(server_settings)
    job = sending._Job(
        "welcome",
        load_template_set("welcome", server_settings.templates_dir),
        server_settings,
        None,
        None,
    )
    pool = WorkerPool(2, job, client.preparer, None)
    try:
        processes = pool._pool._processes  # private: the forked workers
        os.kill(next(iter(processes)), signal.SIGKILL)
        async with asyncio.timeout(30):
            while not pool._pool._broken:  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.01)
        checked = CheckedRows(str(rows))
        with Spool(tmp_path) as spool, pytest.raises(WorkerError) as raised:
            pool.check(enumerate(sending._rows(RecipientFile(rows)), 1), checked, spool)
    finally:
        await asyncio.to_thread(pool.close)
    assert "--workers 1" in str(raised.value)
