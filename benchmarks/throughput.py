"""Measure mailer's throughput against the usual ways of sending, in one run.

    .venv/bin/python benchmarks/throughput.py            # the full run (~15 min)
    .venv/bin/python benchmarks/throughput.py --quick    # a smoke run

Each SMTP server runs in its own process on 127.0.0.1 (see sinks.py), and each
client run is a fresh process (see clients.py), so CPU seconds and peak RSS are
the client's own. Clients are interleaved round by round; a figure is the median
of the rounds, and so is a ratio (computed within each round, where the machine
was equally busy for both clients). Scenarios:

  loopback  the aiosmtpd sink, no added latency (the targets); then the same
            against a minimal sink, where the client is the bottleneck
  link      each reply leaves 20 ms after its command arrived (a 20 ms round
            trip; commands sent together share it)
  slow      the server takes 20 ms for MAIL, RCPT and end of data, one command
            at a time (pipelining cannot help), concurrency 10

Then mailer sends 100,000 messages from a CSV to a minimal sink, with the
report streamed to a file, and prints its peak RSS at 10k and at 100k.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinks import Sink

HERE = Path(__file__).resolve().parent
RTT = 0.02


@dataclass
class Run:
    """One client in one scenario: what to run and the figures of each round."""

    client: str
    messages: int
    connections: int | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        k = f" K={self.connections}" if self.connections else ""
        return f"{self.client}{k}"

    def median(self, key: str) -> float:
        return statistics.median(float(r[key]) for r in self.rounds)


def write_rows(path: Path, count: int) -> None:
    """Write ``count`` recipients; one in four has a non-ASCII name."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            name = f"Zoë Client {n}" if n % 4 == 0 else f"Client {n}"
            plan = "pro" if n % 3 == 0 else "basic"
            writer.writerow([f"user{n}@example.test", name, f"C-{n:06d}", plan])


def run_client(run: Run, sink: Sink, csv_path: Path, timeout: float) -> dict[str, Any]:
    """Run one client process against ``sink`` and add the sink's count to its line."""
    command = [
        sys.executable,
        str(HERE / "clients.py"),
        run.client,
        "--port",
        str(sink.port),
        "--csv",
        str(csv_path),
    ]
    if run.connections is not None:
        command += ["--connections", str(run.connections)]
    before = sink.delivered
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        line = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as exc:
        line = {
            "client": run.client,
            "messages": run.messages,
            "seconds": timeout,
            "rate": 0.0,
            "errors": run.messages,
            "cpu_seconds": float("nan"),
            "peak_rss_mb": float("nan"),
            "failure": type(exc).__name__,
        }
    delivered = sink.delivered - before
    line["delivered"] = delivered
    # Lost: neither delivered nor reported as failed. (Negative: duplicates.)
    line["lost"] = run.messages - delivered - int(line["errors"])
    return line


def scenario(
    title: str, sink: Sink, runs: list[Run], rounds: int, folder: Path
) -> list[Run]:
    """Run every client ``rounds`` times, interleaved, and print the table."""
    paths: dict[int, Path] = {}
    for run in runs:
        if run.messages not in paths:
            paths[run.messages] = folder / f"rows-{run.messages}.csv"
            write_rows(paths[run.messages], run.messages)
    for number in range(1, rounds + 1):
        for run in runs:
            timeout = max(120.0, run.messages * 0.2)
            line = run_client(run, sink, paths[run.messages], timeout)
            run.rounds.append(line)
            print(f"  [{title} round {number}] {json.dumps(line)}", flush=True)
    print(f"\n== {title}: median of {rounds} rounds")
    print(
        f"{'client':<18}{'msgs':>7}{'msg/s':>9}{'errors':>8}{'lost':>6}"
        f"{'cpu s':>8}{'rss MB':>8}"
    )
    for run in runs:
        print(
            f"{run.label:<18}{run.messages:>7}{run.median('rate'):>9.1f}"
            f"{max(int(r['errors']) for r in run.rounds):>8}"
            f"{max(int(r['lost']) for r in run.rounds):>6}"
            f"{run.median('cpu_seconds'):>8.2f}{run.median('peak_rss_mb'):>8.1f}"
        )
    print("  (errors and lost: the worst round)")
    return runs


def ratio(numerator: Run, denominator: Run) -> float:
    """Return the median over rounds of the per-round rate ratio."""
    pairs = zip(numerator.rounds, denominator.rounds, strict=True)
    values = [a["rate"] / b["rate"] if b["rate"] else float("inf") for a, b in pairs]
    return statistics.median(values)


def verdict(label: str, value: float, target: float, unit: str = "x") -> None:
    mark = "MET" if value >= target else "NOT MET"
    print(f"  {label:<52}{value:>8.2f}{unit}  target >= {target:g}{unit}  {mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", choices=["loopback", "minimal", "link", "slow", "100k"]
    )
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    scale = 10 if args.quick else 1
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    print(f"working files in {folder}")

    if args.only in (None, "loopback"):
        n = 5000 // scale
        sink = Sink("aiosmtpd")
        try:
            runs = scenario(
                "loopback (aiosmtpd sink)",
                sink,
                [
                    Run("naive", n),
                    Run("smtplib", n),
                    Run("aiosmtplib", n, 5),
                    Run("ceiling", n, 4),
                    Run("mailer", n),
                    Run("mailer-worker", n),
                ],
                rounds,
                folder,
            )
        finally:
            sink.stop()
        naive, smt, aio, ceiling, mailer, worker = runs
        print("\n  ratios (median of per-round ratios):")
        verdict("e/a mailer / naive gather (report only)", ratio(mailer, naive), 0)
        verdict("e/b mailer / smtplib one connection", ratio(mailer, smt), 5)
        verdict("e/c mailer / aiosmtplib K=5 EmailMessage", ratio(mailer, aio), 0)
        verdict(
            "e/d mailer / pipelined ceiling, 4 connections",
            ratio(mailer, ceiling),
            0.75,
        )
        verdict("worker process: mailer-worker / mailer", ratio(worker, mailer), 1)
        errors = max(int(r["errors"]) + abs(int(r["lost"])) for r in mailer.rounds)
        verdict("mailer errors + lost (worst round), must be 0", -errors, 0, "")

    if args.only in (None, "loopback", "minimal"):
        n = 5000 // scale
        sink = Sink("fast")
        try:
            runs = scenario(
                "loopback (minimal sink: where the client is the bottleneck)",
                sink,
                [
                    Run("smtplib", n),
                    Run("aiosmtplib", n, 5),
                    Run("ceiling", n, 4),
                    Run("mailer", n),
                    Run("mailer-worker", n),
                ],
                rounds,
                folder,
            )
        finally:
            sink.stop()
        smt, aio, ceiling, mailer, worker = runs
        print(
            "\n  ratios (median of per-round ratios; for context, beside the targets):"
        )
        verdict("e/b mailer / smtplib one connection", ratio(mailer, smt), 5)
        verdict("e/c mailer / aiosmtplib K=5 EmailMessage", ratio(mailer, aio), 0)
        verdict("e/d mailer / pipelined ceiling", ratio(mailer, ceiling), 0.75)
        verdict("worker process: mailer-worker / mailer", ratio(worker, mailer), 1)

    if args.only in (None, "link"):
        n = 1000 // scale
        slow_n = 250 // scale
        sink = Sink("link", RTT)
        try:
            runs = scenario(
                "link: 20 ms round trip",
                sink,
                [
                    Run("naive", n),
                    Run("smtplib", slow_n),
                    Run("aiosmtplib", n, 5),
                    Run("ceiling", n, 4),
                    Run("mailer", n),
                ],
                rounds,
                folder,
            )
        finally:
            sink.stop()
        naive, smt, aio, ceiling, mailer = runs
        ideal = 5 / (2 * RTT)
        print("\n  ratios (median of per-round ratios):")
        verdict("e/a mailer / naive gather (report only)", ratio(mailer, naive), 0)
        verdict("e/b mailer / smtplib (report only)", ratio(mailer, smt), 0)
        verdict("e/c mailer / aiosmtplib, both 5 connections", ratio(mailer, aio), 2.5)
        verdict("e/d mailer / ceiling (report only)", ratio(mailer, ceiling), 0)
        share = mailer.median("rate") / ideal
        verdict(f"mailer / ideal 5/(2 x 20 ms) = {ideal:g}/s", share, 0.8)

    if args.only in (None, "slow"):
        n = 1000 // scale
        slow_n = 250 // scale
        sink = Sink("serial", RTT)
        try:
            runs = scenario(
                "slow server: 20 ms per MAIL, RCPT, end of data; concurrency 10",
                sink,
                [
                    Run("naive", n),
                    Run("smtplib", slow_n),
                    Run("aiosmtplib", n, 10),
                    Run("ceiling", n, 4),
                    Run("mailer", n, 10),
                ],
                rounds,
                folder,
            )
        finally:
            sink.stop()
        mailer = runs[-1]
        ideal = 10 / (3 * RTT)
        print()
        share = mailer.median("rate") / ideal
        verdict(f"mailer / ideal 10/(3 x 20 ms) = {ideal:.1f}/s", share, 0.8)
        verdict(
            "e/c mailer / aiosmtplib, both 10 connections", ratio(mailer, runs[2]), 0
        )

    if args.only in (None, "100k"):
        n = 100_000 // scale
        path = folder / f"rows-{n}.csv"
        write_rows(path, n)
        sink = Sink("fast")
        try:
            before = sink.delivered
            command = [
                sys.executable,
                str(HERE / "clients.py"),
                "mailer-100k",
                "--port",
                str(sink.port),
                "--csv",
                str(path),
                "--report",
                str(folder / "report.jsonl"),
            ]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=1800, check=False
            )
            line = json.loads(done.stdout.strip().splitlines()[-1])
            line["delivered"] = sink.delivered - before
        finally:
            sink.stop()
        print(f"\n== mailer, {n} messages from a CSV (minimal sink, report streamed)")
        print(f"  {json.dumps(line)}")
        at_10k = line.get("peak_rss_mb_at_10000")
        at_end = line.get(f"peak_rss_mb_at_{n}", line["peak_rss_mb"])
        if at_10k:
            print(f"  peak RSS at 10,000: {at_10k} MB; at {n:,}: {at_end} MB")
            verdict("peak RSS at the end, MB (lower is better)", -at_end, -100, "")
            verdict(
                "growth from 10k to the end, % (lower is better)",
                -100 * (at_end / at_10k - 1),
                -10,
                "",
            )


if __name__ == "__main__":
    main()
