"""Measure a batch that shares one attachment against the same batch without it.

    .venv/bin/python benchmarks/attachments.py            # 10,000 messages, 1 MB
    .venv/bin/python benchmarks/attachments.py --quick    # 500 messages

Each client run is a fresh process (peak RSS and CPU are its own) sending the
example ``welcome`` set with ``send_messages`` to a loopback sink in another
process (content_sink.py). Runs alternate (without, with, without, with...),
and each figure is the median of the rounds, so both sides see the same
machine. The "with" run counts how many times an attachment was encoded.
Targets (issue 13): peak RSS under 150 MB, one encoding.
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

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE.parent / "examples" / "templates"


def write_rows(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            writer.writerow([f"user{n}@example.test", f"Client {n}", f"C-{n}", "pro"])


async def client(port: int, rows: Path, attachment: Path | None) -> dict[str, Any]:
    from mailer import MailerSettings, RecipientFile, RowAttachments, send_messages
    from mailer.content.attachments import Attachment

    encodings = 0
    build = Attachment._build_part

    def counted(self: Attachment) -> tuple[bytes, bytes]:
        nonlocal encodings
        encodings += 1
        return build(self)

    Attachment._build_part = counted  # type: ignore[method-assign]
    settings = MailerSettings(
        _env_file=None,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        from_="Example Shop <shop@example.test>",
        templates_dir=TEMPLATES,
    )
    files = RowAttachments.from_paths([attachment]) if attachment else None
    started = time.perf_counter()
    cpu = time.process_time()
    report = await send_messages(
        "welcome",
        RecipientFile(rows),
        settings=settings,
        keep_results=False,
        attachments=files,
    )
    return {
        "sent": report.sent,
        "failed": report.failed + report.invalid,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "encodings": encodings,
    }


def run_round(
    rows: Path, count: int, attachment: Path | None, timeout: float
) -> dict[str, Any]:
    sink = ContentSink()
    try:
        command = [sys.executable, __file__, "--client", str(sink.port), str(rows)]
        if attachment is not None:
            command.append(str(attachment))
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"client failed:\n{done.stderr}")
        figures: dict[str, Any] = json.loads(done.stdout)
        figures["delivered"] = sink.messages
        figures["octets"] = sink.octets
    finally:
        sink.stop()
    figures["msg_per_s"] = figures["sent"] / figures["seconds"]
    figures["mb_per_s"] = figures["octets"] / 1e6 / figures["seconds"]
    figures["lost"] = count - figures["delivered"] - figures["failed"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", nargs="+")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    if args.client:
        port, rows, *attachment = args.client
        figures = asyncio.run(
            client(int(port), Path(rows), Path(attachment[0]) if attachment else None)
        )
        print(json.dumps(figures))
        return
    count = args.messages or (500 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as folder:
        rows = Path(folder) / "rows.csv"
        write_rows(rows, count)
        attachment = Path(folder) / "brochure.pdf"
        attachment.write_bytes(os.urandom(1_000_000))
        results: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for number in range(rounds):
            for label, path in (("without", None), ("with", attachment)):
                figures = run_round(rows, count, path, timeout=3600)
                results[label].append(figures)
                print(
                    f"round {number + 1} {label:>7}: {figures['msg_per_s']:8.1f} msg/s "
                    f"{figures['mb_per_s']:8.1f} MB/s  peak RSS "
                    f"{figures['peak_rss_mb']:6.1f} MB  encodings "
                    f"{figures['encodings']}  lost {figures['lost']}",
                    flush=True,
                )

    def median(label: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[label])

    ratio = statistics.median(
        w["msg_per_s"] / o["msg_per_s"]
        for w, o in zip(results["with"], results["without"], strict=True)
    )
    print()
    print(f"{count:,} messages, median of {rounds} round(s), one 1 MB attachment:")
    print("              msg/s      MB/s   peak RSS MB   encodings   CPU s")
    for label in ("without", "with"):
        print(
            f"{label:>8}  {median(label, 'msg_per_s'):9.1f} "
            f"{median(label, 'mb_per_s'):9.1f} {median(label, 'peak_rss_mb'):13.1f} "
            f"{max(r['encodings'] for r in results[label]):11d} "
            f"{median(label, 'cpu_seconds'):7.1f}"
        )
    print(f"msg/s with / without (median of per-round ratios): {ratio:.3f}")
    print(
        f"targets: peak RSS with < 150 MB: "
        f"{'met' if median('with', 'peak_rss_mb') < 150 else 'NOT met'}; "
        "one encoding: "
        f"{'met' if max(r['encodings'] for r in results['with']) == 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
