"""Measure what DKIM signing costs: signed against unsigned msg/s, in one run.

    .venv/bin/python benchmarks/dkim_cost.py            # 5,000 messages, 3 rounds
    .venv/bin/python benchmarks/dkim_cost.py --quick    # 1,000 messages, 1 round

Each client run is a fresh process sending the example ``welcome`` set with
``send_messages`` to a loopback sink in another process (content_sink.py):
unsigned, signed with rsa-2048, signed with ed25519, interleaved round by
round. Ratios are the median of the per-round ratios (signed / unsigned in the
same round), because the shared machine's speed drifts. Target (issue 13):
signed at least half the unsigned rate.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from content_sink import ContentSink

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE.parent / "examples" / "templates"
KINDS = ("unsigned", "rsa-2048", "ed25519")


def write_rows(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            writer.writerow([f"user{n}@example.test", f"Client {n}", f"C-{n}", "pro"])


async def client(port: int, rows: Path, key: Path | None) -> dict[str, Any]:
    from mailer import MailerSettings, RecipientFile, send_messages

    values: dict[str, Any] = {
        "_env_file": None,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "none",
        "from_": "Example Shop <shop@example.test>",
        "templates_dir": TEMPLATES,
    }
    if key is not None:
        values.update(
            dkim_domain="example.test",
            dkim_selector="bench",
            dkim_private_key_file=key,
        )
    settings = MailerSettings(**values)
    started = time.perf_counter()
    cpu = time.process_time()
    report = await send_messages(
        "welcome", RecipientFile(rows), settings=settings, keep_results=False
    )
    return {
        "sent": report.sent,
        "failed": report.failed + report.invalid,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
    }


def run_round(rows: Path, key: Path | None) -> dict[str, Any]:
    sink = ContentSink()
    try:
        command = [sys.executable, __file__, "--client", str(sink.port), str(rows)]
        if key is not None:
            command.append(str(key))
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=1800, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"client failed:\n{done.stderr}")
        figures: dict[str, Any] = json.loads(done.stdout)
        figures["delivered"] = sink.messages
    finally:
        sink.stop()
    figures["msg_per_s"] = figures["sent"] / figures["seconds"]
    # The client's own CPU per message: on a shared, loaded machine the wall
    # clock mostly measures waiting for a core; CPU time does not.
    figures["cpu_ms_per_msg"] = 1000 * figures["cpu_seconds"] / figures["sent"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", nargs="+")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.client:
        port, rows, *key = args.client
        figures = asyncio.run(
            client(int(port), Path(rows), Path(key[0]) if key else None)
        )
        print(json.dumps(figures))
        return
    from mailer.content.dkim import generate_key

    count = 1_000 if args.quick else 5_000
    rounds = 1 if args.quick else 3
    with tempfile.TemporaryDirectory() as folder:
        rows = Path(folder) / "rows.csv"
        write_rows(rows, count)
        keys: dict[str, Path | None] = {"unsigned": None}
        for kind, made in (
            ("rsa-2048", generate_key("rsa", bits=2048)),
            ("ed25519", generate_key("ed25519")),
        ):
            path = Path(folder) / f"{kind}.pem"
            path.write_bytes(made.private_pem())
            keys[kind] = path
        results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for number in range(rounds):
            for kind in KINDS:
                figures = run_round(rows, keys[kind])
                results[kind].append(figures)
                print(
                    f"round {number + 1} {kind:>8}: {figures['msg_per_s']:8.1f} msg/s "
                    f"{figures['cpu_ms_per_msg']:6.3f} CPU ms/msg "
                    f"(sent {figures['sent']}, failed {figures['failed']}, "
                    f"delivered {figures['delivered']})",
                    flush=True,
                )
    print()
    print(f"{count:,} messages, median of {rounds} round(s):")
    unsigned = results["unsigned"]
    print("            msg/s  wall ratio  CPU ms/msg  CPU ratio (unsigned/signed)")
    for kind in KINDS:
        rate = statistics.median(r["msg_per_s"] for r in results[kind])
        ratio = statistics.median(
            s["msg_per_s"] / u["msg_per_s"]
            for s, u in zip(results[kind], unsigned, strict=True)
        )
        cpu = statistics.median(r["cpu_ms_per_msg"] for r in results[kind])
        cpu_ratio = statistics.median(
            u["cpu_ms_per_msg"] / s["cpu_ms_per_msg"]
            for s, u in zip(results[kind], unsigned, strict=True)
        )
        verdict = ""
        if kind != "unsigned":
            met = "met" if ratio >= 0.5 else "NOT met"
            verdict = f"  target (wall ratio >= 0.5) {met}"
        print(
            f"{kind:>8}: {rate:8.1f}  {ratio:10.3f}  {cpu:10.3f}  {cpu_ratio:9.3f}"
            f"{verdict}"
        )


if __name__ == "__main__":
    main()
