"""Measure a batch whose rows each attach their own file against one shared file.

    .venv/bin/python benchmarks/row_attachments.py          # 400 rows of 2 MB, 3 rounds
    .venv/bin/python benchmarks/row_attachments.py --quick  # 150 rows, 1 round

Both batches send the same number of messages of the same size
(``--attach-column invoice --attachments-dir DIR``): in "shared" every row names
the same 2 MB file, in "own" every row names a file of its own (per-customer
invoices). Each client run is a fresh process sending to a loopback sink in
another process (content_sink.py); runs alternate and each figure is the median
of the rounds. Neither may grow with the number of rows: targets, the shared
batch under 150 MB (issue 13's bound) and the own-files batch within 96 MB of
it (it may keep 64 MB of recently used files for reuse, ``CACHE_BYTES`` in
mailer/bulk/attachments.py). Before the fixes of the attack branch both grew by
each message's size (150 rows: 443 MB shared, 833 MB own; 300 rows own: 1.66 GB).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from content_sink import ContentSink

FILE_BYTES = 2_000_000
SHARED_BOUND_MB = 150
OWN_EXTRA_MB = 96


def write_batch(folder: Path, count: int, *, shared: bool) -> Path:
    """Write the rows, the template set and the files; return the rows file."""
    files = folder / "files"
    files.mkdir()
    templates = folder / "templates" / "invoice"
    templates.mkdir(parents=True)
    (templates / "subject.txt").write_text("Your invoice\n")
    (templates / "body.txt").write_text("Hello {{ name }}, your invoice is attached.\n")
    rows = folder / "rows.csv"
    with rows.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "invoice"])
        for n in range(count):
            name = "invoice.pdf" if shared else f"invoice-{n}.pdf"
            if not shared or n == 0:
                (files / name).write_bytes(os.urandom(FILE_BYTES))
            writer.writerow([f"user{n}@example.test", f"Client {n}", name])
    return rows


async def client(port: int, folder: Path) -> dict[str, Any]:
    from mailer import MailerSettings, RecipientFile, RowAttachments, send_messages

    settings = MailerSettings(
        _env_file=None,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        from_="Example Shop <shop@example.test>",
        templates_dir=folder / "templates",
    )
    files = RowAttachments(column="invoice", directory=folder / "files")
    started = time.perf_counter()
    report = await send_messages(
        "invoice",
        RecipientFile(folder / "rows.csv"),
        settings=settings,
        keep_results=False,
        attachments=files,
    )
    return {
        "sent": report.sent,
        "failed": report.failed + report.invalid,
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_round(folder: Path, count: int) -> dict[str, Any]:
    sink = ContentSink()
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--client", str(sink.port), str(folder)],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"client failed:\n{done.stderr}")
        figures: dict[str, Any] = json.loads(done.stdout)
        figures["delivered"] = sink.messages
    finally:
        sink.stop()
    figures["lost"] = count - figures["delivered"] - figures["failed"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", nargs=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    if args.client:
        port, folder = args.client
        print(json.dumps(asyncio.run(client(int(port), Path(folder)))))
        return
    count = args.rows or (150 if args.quick else 400)
    rounds = args.rounds or (1 if args.quick else 3)
    results: dict[str, list[dict[str, Any]]] = {"shared": [], "own": []}
    with tempfile.TemporaryDirectory() as top:
        folders = {}
        for label in results:
            folders[label] = Path(top) / label
            folders[label].mkdir()
            write_batch(folders[label], count, shared=label == "shared")
        for number in range(rounds):
            for label, folder in folders.items():
                figures = run_round(folder, count)
                results[label].append(figures)
                print(
                    f"round {number + 1} {label:>6}: peak RSS "
                    f"{figures['peak_rss_mb']:7.1f} MB  {figures['seconds']:6.1f} s  "
                    f"sent {figures['sent']}  lost {figures['lost']}",
                    flush=True,
                )
    peak = {
        label: statistics.median(r["peak_rss_mb"] for r in runs)
        for label, runs in results.items()
    }
    ratio = statistics.median(
        o["peak_rss_mb"] / s["peak_rss_mb"]
        for o, s in zip(results["own"], results["shared"], strict=True)
    )
    lost = sum(r["lost"] for runs in results.values() for r in runs)
    print()
    print(
        f"{count} rows of one {FILE_BYTES / 1e6:.0f} MB file each, median of {rounds}:"
    )
    print(f"  shared file: peak RSS {peak['shared']:7.1f} MB")
    print(f"  own files:   peak RSS {peak['own']:7.1f} MB")
    extra = peak["own"] - peak["shared"]
    met = peak["shared"] < SHARED_BOUND_MB and extra < OWN_EXTRA_MB and lost == 0
    print(
        f"peak RSS own / shared (median of per-round ratios): {ratio:.2f}; "
        f"own - shared: {extra:.1f} MB"
    )
    print(
        f"targets: shared < {SHARED_BOUND_MB} MB, own - shared < {OWN_EXTRA_MB} MB, "
        f"nothing lost: {'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
