"""Measure the PostgreSQL queue against direct sending, in one run, on one sink.

    .venv/bin/python benchmarks/queue_delivery.py            # ~3 min on 2 cores
    .venv/bin/python benchmarks/queue_delivery.py --quick    # a smoke run

A throwaway PostgreSQL (mailer.testing.postgres) and a minimal SMTP sink in
its own process (sinks.py, "fast": it answers at once, so the client is the
bottleneck) serve every measurement; each client is a fresh process. Printed:

1. enqueue rate, messages/s: ``send_later`` one call after another on one
   connection (the outbox use: your own connection), ``send_later`` opening
   its own connection per call (MAILER_QUEUE_DSN only), and ``mailer send
   --queue`` for a whole CSV (process start included);
2. delivery rate, messages/s, for the same CSV: ``mailer send`` without a
   queue (the baseline, measured in the same run), then a batch enqueued with
   ``--queue`` drained by 1 and by 2 ``mailer worker`` processes (from the
   workers' start to the last message recorded sent), with the ratios;
3. enqueue-to-delivery latency at a steady 100 messages/s: ``send_later``
   paced at 100/s for 15 s with one worker running, then with two; latency
   is the time from the message's insert to its 'sent' commit (both by the
   database's clock), p50 and p99.

The machine's load average is printed at the start and the end: on a shared
2-core machine the figures move with whatever else runs.

Rounds are interleaved for the delivery figures; a figure is the median of
the rounds and a ratio the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from sinks import Sink

from mailer import MailerSettings, Message
from mailer.queue import send_later
from mailer.queue.schema import apply_schema
from mailer.testing.postgres import TemporaryPostgres

# Not named queue.py (as the issue proposed): in this folder that name shadows
# the standard library's queue module for every other benchmark script.
HERE = Path(__file__).resolve().parent

ROOT = HERE.parent
TEMPLATES = ROOT / "examples" / "templates"
MAILER = [sys.executable, "-m", "mailer"]
LATENCY_RATE = 100.0


def write_rows(path: Path, count: int) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            writer.writerow([f"user{n}@example.test", f"Client {n}", f"C-{n}", "pro"])
    return path


def environment(dsn: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        {
            "MAILER_QUEUE_DSN": dsn,
            "MAILER_SMTP_HOST": "127.0.0.1",
            "MAILER_SMTP_PORT": str(port),
            "MAILER_SMTP_TLS": "none",
            "MAILER_FROM": "shop@example.test",
            "MAILER_TEMPLATES_DIR": str(TEMPLATES),
            "MAILER_QUEUE_HEARTBEAT": "2",
        }
    )
    return env


async def reset(dsn: str) -> None:
    """Empty the queue between measurements (same schema, no rows, no jobs)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        await c.execute(
            "TRUNCATE mailer_messages, mailer_batches, procrastinate_jobs,"
            " procrastinate_events CASCADE"
        )


async def scalar(dsn: str, sql: str) -> Any:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        row = await (await c.execute(sql.encode())).fetchone()
        assert row is not None
        return row[0]


def settings_for(dsn: str, port: int) -> MailerSettings:
    return MailerSettings(
        _env_file=None,
        queue_dsn=dsn,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        from_="shop@example.test",
    )


def message(n: int) -> Message:
    return Message(to=f"user{n}@example.test", subject=f"Receipt {n}", body="Thanks")


async def enqueue_rates(dsn: str, port: int, csv_path: Path, count: int) -> None:
    settings = settings_for(dsn, port)
    await reset(dsn)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for n in range(count):
            await send_later(message(n), connection=conn, settings=settings)
        shared = count / (time.perf_counter() - started)
    await reset(dsn)
    own_count = max(50, count // 5)
    started = time.perf_counter()
    for n in range(own_count):
        await send_later(message(n), settings=settings)
    own = own_count / (time.perf_counter() - started)
    await reset(dsn)
    env = environment(dsn, port)
    started = time.perf_counter()
    await run(env, "send", "-t", "welcome", "-r", str(csv_path), "--queue")
    batch = count / (time.perf_counter() - started)
    print("1. enqueue rate (messages/s)")
    print(f"   send_later, on one connection (yours)     {shared:8.0f}  ({count})")
    print(f"   send_later, a connection of its own each  {own:8.0f}  ({own_count})")
    print(f"   mailer send --queue (whole CSV, process)  {batch:8.0f}  ({count})")


async def run(env: dict[str, str], *args: str) -> None:
    """Run one mailer command to its end; fail loudly if it fails."""
    process = await asyncio.create_subprocess_exec(
        *MAILER, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"mailer {args[0]} failed: {stderr.decode()[-500:]}")


async def start_worker(
    env: dict[str, str], stdout: int = subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *MAILER, "worker", env=env, stdout=stdout, stderr=subprocess.DEVNULL
    )


async def wait_all_sent(dsn: str) -> None:
    # The database has no event to await for "every message sent": poll it.
    while await scalar(  # noqa: ASYNC110
        dsn, "SELECT count(*) FROM mailer_messages WHERE state <> 'sent'"
    ):
        await asyncio.sleep(0.05)


async def direct_send(env: dict[str, str], csv_path: Path, count: int) -> float:
    started = time.perf_counter()
    await run(env, "send", "-t", "welcome", "-r", str(csv_path))
    return count / (time.perf_counter() - started)


async def queued_send(
    dsn: str, env: dict[str, str], csv_path: Path, count: int, workers: int
) -> float:
    await reset(dsn)
    await run(env, "send", "-t", "welcome", "-r", str(csv_path), "--queue")
    started = time.perf_counter()
    processes = [await start_worker(env) for _ in range(workers)]
    try:
        await wait_all_sent(dsn)
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            await asyncio.wait_for(process.wait(), 60)
    return count / elapsed


async def delivery_rates(
    dsn: str, port: int, csv_path: Path, count: int, rounds: int
) -> None:

    env = environment(dsn, port)
    figures: dict[str, list[float]] = {"direct": [], "1 worker": [], "2 workers": []}
    for _ in range(rounds):
        figures["direct"].append(await direct_send(env, csv_path, count))
        figures["1 worker"].append(await queued_send(dsn, env, csv_path, count, 1))
        figures["2 workers"].append(await queued_send(dsn, env, csv_path, count, 2))
    median = {k: statistics.median(v) for k, v in figures.items()}

    def ratio(a: str, b: str) -> float:
        return statistics.median(
            x / y for x, y in zip(figures[a], figures[b], strict=True)
        )

    print(f"2. delivery rate (messages/s), {count} rows, median of {rounds} round(s)")
    print(f"   mailer send, no queue (baseline)          {median['direct']:8.0f}")
    print(
        f"   queue, 1 worker                           {median['1 worker']:8.0f}"
        f"  ({ratio('1 worker', 'direct'):.2f}x the baseline)"
    )
    print(
        f"   queue, 2 workers                          {median['2 workers']:8.0f}"
        f"  ({ratio('2 workers', '1 worker'):.2f}x 1 worker,"
        f" {ratio('2 workers', 'direct'):.2f}x the baseline)"
    )


async def latency(dsn: str, port: int, seconds: float, workers: int) -> None:
    await reset(dsn)
    env = environment(dsn, port)
    settings = settings_for(dsn, port)
    processes = [
        await start_worker(env, stdout=subprocess.PIPE) for _ in range(workers)
    ]
    for worker in processes:
        assert worker.stdout is not None
        await worker.stdout.readline()  # "worker ... taking jobs": it is ready
    total = int(seconds * LATENCY_RATE)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            for n in range(total):
                # A steady rate: each enqueue at its own tick, not in bursts.
                due = started + n / LATENCY_RATE
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await send_later(message(n), connection=conn, settings=settings)
            achieved = total / (time.perf_counter() - started)
        await wait_all_sent(dsn)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT extract(epoch FROM updated_at - created_at) * 1000"
                " FROM mailer_messages ORDER BY 1"
            )
            values = [float(row[0]) for row in await cursor.fetchall()]
    finally:
        for worker in processes:
            worker.send_signal(signal.SIGTERM)
        for worker in processes:
            await asyncio.wait_for(worker.communicate(), 60)
    p50 = values[len(values) // 2]
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    print(
        f"   {workers} worker(s): enqueued at {achieved:.0f} msg/s for {seconds:g}s "
        f"({total} msgs): p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    count = 500 if args.quick else 5000
    rounds = 1 if args.quick else 3
    seconds = 3.0 if args.quick else 15.0
    sink = Sink("fast")
    try:
        with TemporaryPostgres() as server, tempfile.TemporaryDirectory() as tmp:
            async with await psycopg.AsyncConnection.connect(
                server.dsn, autocommit=True
            ) as connection:
                await apply_schema(connection)
            csv_path = write_rows(Path(tmp) / "rows.csv", count)
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"PostgreSQL {server.bindir}, sink 'fast' on 127.0.0.1:{sink.port}")
            print(f"load average at the start: {load}")
            await enqueue_rates(server.dsn, sink.port, csv_path, count)
            await delivery_rates(server.dsn, sink.port, csv_path, count, rounds)
            print(
                "3. enqueue-to-delivery latency, send_later paced at "
                f"{LATENCY_RATE:.0f} msg/s (insert to 'sent', database clock)"
            )
            for workers in (1, 2):
                await latency(server.dsn, sink.port, seconds, workers)
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"load average at the end: {load} (2 cores; other work included)")
    finally:
        sink.stop()


if __name__ == "__main__":
    asyncio.run(main())
