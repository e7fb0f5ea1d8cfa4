"""Measure what a journal costs `mailer send`, and what a change costs, in one run.

    .venv/bin/python benchmarks/journal_cost.py [--rows 2000] [--rounds 3]
    .venv/bin/python benchmarks/journal_cost.py --baseline /tmp/base

`mailer send` runs as a process against the fast sink of sinks.py (its own
process, 127.0.0.1), with and without `--journal`, on this tree and, with
`--baseline DIR`, on another checkout of mailer (for instance `git worktree
add /tmp/base main`), each round running every configuration once, in turn.
A figure is the median over the rounds of the rate the command reports
(rows / the seconds in its summary line: check pass, journal and sending, not
the interpreter's start); a ratio is the median of the ratios within each
round, where the machine was equally busy for both. The journal commits
twice per message with `synchronous=FULL`, so its cost is mostly the disk's
fsync.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sinks import Sink

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUMMARY = re.compile(r"^(\d+) sent, .* in ([0-9.]+)s$", re.MULTILINE)


def write_rows(path: Path, count: int) -> None:
    """Write ``count`` recipients for the example template."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            writer.writerow([f"user{n}@example.test", f"Client {n}", f"C-{n}", "pro"])


def run_send(tree: Path, port: int, folder: Path, rows: Path, journal: bool) -> float:
    """Run `mailer send` from ``tree``; return messages per second."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        {
            "PYTHONPATH": str(tree),
            "MAILER_SMTP_HOST": "127.0.0.1",
            "MAILER_SMTP_PORT": str(port),
            "MAILER_SMTP_TLS": "none",
            "MAILER_FROM": "Shop <shop@example.test>",
            "MAILER_TEMPLATES_DIR": str(ROOT / "examples" / "templates"),
        }
    )
    command = [sys.executable, "-m", "mailer", "send", "-t", "welcome", "-r", str(rows)]
    if journal:
        target = folder / "batch.journal"
        for name in ("", "-wal", "-shm", "-content"):
            Path(f"{target}{name}").unlink(missing_ok=True)
        command += ["--journal", str(target)]
    done = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=900
    )
    match = SUMMARY.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"mailer send failed ({done.returncode}): {done.stderr}")
    return int(match.group(1)) / float(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout of mailer")
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    configurations = [(name, journal) for name in trees for journal in (False, True)]
    rates: dict[tuple[str, bool], list[float]] = {c: [] for c in configurations}
    sink = Sink("fast")
    try:
        with tempfile.TemporaryDirectory(prefix="mailer-journal-cost-") as name:
            folder = Path(name)
            rows = folder / "recipients.csv"
            write_rows(rows, args.rows)
            for round_number in range(1, args.rounds + 1):
                for tree_name, journal in configurations:
                    rate = run_send(trees[tree_name], sink.port, folder, rows, journal)
                    rates[(tree_name, journal)].append(rate)
                print(f"round {round_number}/{args.rounds} done", flush=True)
    finally:
        sink.stop()
    print(f"mailer send, {args.rows} rows, fast sink, median of {args.rounds} rounds")
    for tree_name, journal in configurations:
        label = f"{tree_name}, {'--journal' if journal else 'no journal'}"
        print(
            f"  {label:<28} {statistics.median(rates[(tree_name, journal)]):8.0f} msg/s"
        )

    def ratio(a: tuple[str, bool], b: tuple[str, bool]) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    for tree_name in trees:
        cost = ratio((tree_name, True), (tree_name, False))
        print(f"  {tree_name}: --journal / no journal = {cost:.2f}")
    if "baseline" in trees:
        for journal in (False, True):
            label = "--journal" if journal else "no journal"
            change = ratio(("this tree", journal), ("baseline", journal))
            print(f"  this tree / baseline, {label}: {change:.2f}")


if __name__ == "__main__":
    main()
