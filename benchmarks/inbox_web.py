"""Time the web inbox's list page and API list with 1,000 messages; measure its memory.

Two `mailer inbox` processes run side by side in this run: one on an empty
folder (the baseline) and one on a folder of 1,000 messages (text + HTML, one
in ten with an attachment, ~7 KB each). For each, the list page (`/`), the API
list (`/api/v1/messages`) and a search are requested many times over one
keep-alive connection; the median and 95th percentile are printed, with the
ratio to the empty inbox, and the resident memory of each process (VmRSS now,
VmHWM the peak). Targets: under 200 ms and under 150 MB.

    .venv/bin/python benchmarks/inbox_web.py [--messages 1000] [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from mailer.content.message import Envelope
from mailer.inbox.store import MailStore
from mailer.records import SentMail, SessionInfo

LATENCY_TARGET_MS = 200.0
MEMORY_TARGET_MB = 150.0
WORDS = [
    "order",
    "invoice",
    "shipping",
    "account",
    "password",
    "welcome",
    "receipt",
    "pineapple",
]


def message(number: int) -> SentMail:
    mail = EmailMessage()
    mail["From"] = "Example Shop <shop@example.test>"
    mail["To"] = f"Customer {number} <customer{number}@example.test>"
    mail["Subject"] = f"Your {WORDS[number % len(WORDS)]} #{number}"
    paragraph = f"Hello customer {number}, thank you for your {WORDS[number % 7]}. "
    mail.set_content(paragraph * 20)
    html = "".join(
        f"<p>{paragraph}<a href='https://shop.test/{number}'>link</a></p>"
        for _ in range(20)
    )
    mail.add_alternative(f"<html><body>{html}</body></html>", subtype="html")
    if number % 10 == 0:
        mail.add_attachment(
            os.urandom(2048),
            maintype="application",
            subtype="pdf",
            filename=f"invoice-{number}.pdf",
        )
    return SentMail(
        envelope=Envelope(
            mail_from="shop@example.test", rcpt_tos=(f"customer{number}@example.test",)
        ),
        raw=mail.as_bytes(),
        session=SessionInfo(1, ("127.0.0.1", 40000), "bench", "none", None, None),
    )


async def fill(folder: Path, count: int) -> None:
    store = MailStore(folder, max_messages=None)
    store.load()
    start = time.time() - count
    for number in range(count):
        await store.add(message(number), received_at=start + number)


def start_inbox(folder: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailer",
            "inbox",
            "--port",
            "0",
            "--http-port",
            "0",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILER_")},
    )
    assert process.stdout is not None
    banner = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", banner)
    if match is None:
        process.kill()
        error = process.stderr.read() if process.stderr else ""
        raise SystemExit(f"the inbox did not start: {banner!r} {error}")
    return process, int(match.group(1))


def memory_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    peak = int(re.search(r"^VmHWM:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    return rss / 1024, peak / 1024


def time_requests(port: int, path: str, count: int) -> tuple[float, float, int]:
    """Median and p95 in ms of GET path, and the size of the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    size = 0
    for _ in range(count + 3):  # the first three warm up
        begin = time.perf_counter()
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read()
        elapsed = (time.perf_counter() - begin) * 1000
        assert answer.status == 200, (path, answer.status)
        size = len(body)
        times.append(elapsed)
    connection.close()
    times = times[3:]
    return statistics.median(times), statistics.quantiles(times, n=20)[18], size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inbox-bench-") as scratch:
        empty, full = Path(scratch) / "empty", Path(scratch) / "full"
        empty.mkdir()
        began = time.perf_counter()
        asyncio.run(fill(full, args.messages))
        stored_mb = sum(p.stat().st_size for p in full.glob("*.eml")) / 1e6
        took = time.perf_counter() - began
        print(f"stored {args.messages} messages in {took:.1f}s ({stored_mb:.1f} MB)")
        processes = {"empty": start_inbox(empty), "1000": start_inbox(full)}
        try:
            paths = {
                "list page /": "/",
                "API list": "/api/v1/messages",
                "search": "/api/v1/messages?q=pineapple",
            }
            results: dict[tuple[str, str], tuple[float, float, int]] = {}
            for name, (_, port) in processes.items():
                for label, path in paths.items():
                    results[(name, label)] = time_requests(port, path, args.requests)
            loaded_name = f"with {args.messages}: median"
            print(
                f"\n{'request':<14}{'empty: median':>15}{loaded_name:>22}"
                f"{'p95':>9}{'ratio':>8}{'bytes':>10}  target"
            )
            ok = True
            for label in paths:
                base = results[("empty", label)]
                loaded = results[("1000", label)]
                passed = loaded[1] < LATENCY_TARGET_MS
                ok &= passed or label == "search"
                verdict = (
                    ("PASS" if passed else "FAIL") if label != "search" else "(info)"
                )
                ratio = loaded[0] / base[0]
                print(
                    f"{label:<14}{base[0]:>12.1f} ms{loaded[0]:>19.1f} ms"
                    f"{loaded[1]:>6.1f} ms{ratio:>7.1f}x{loaded[2]:>10}"
                    f"  p95 < {LATENCY_TARGET_MS:.0f} ms {verdict}"
                )
            print()
            for name, (process, _) in processes.items():
                rss, peak = memory_mb(process.pid)
                passed = peak < MEMORY_TARGET_MB
                ok &= passed
                print(
                    f"memory, {name + ' messages:':<16} RSS {rss:6.1f} MB, "
                    f"peak {peak:6.1f} MB  target peak < {MEMORY_TARGET_MB:.0f} MB "
                    + ("PASS" if passed else "FAIL")
                )
        finally:
            for process, _ in processes.values():
                process.terminate()
                process.wait(timeout=30)
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
