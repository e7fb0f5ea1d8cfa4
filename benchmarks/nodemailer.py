"""Issue 14's figures in one run: mailer against Nodemailer, before and after.

    .venv/bin/python benchmarks/nodemailer.py            # 5,000 messages, 5 rounds
    .venv/bin/python benchmarks/nodemailer.py --quick    # 1,000 messages, 1 round
    .venv/bin/python benchmarks/nodemailer.py --no-dkim  # without the DKIM scenario

Clients, each run in a fresh process with 5 connections, interleaved round by
round against the same sink (the aiosmtpd sink, then the minimal C sink):

  nodemailer  Nodemailer's pooled SMTP transport (benchmarks/nodemailer_peer.mjs)
              handed the finished bytes and envelopes of the same messages: it
              renders and builds nothing. npm installs it into benchmarks/.node
              (ignored by git) on the first run.
  mailer      `mailer send -t welcome -r rows.csv` as a user runs it, rendering
              every message from the template; MAILER_WORKERS at its default
              (one worker process per core for the check pass; no sender
              processes, as both sinks run on this machine)
  mailer-1p   the same with MAILER_WORKERS=1: everything in one process
  mailer-Np   the same with MAILER_WORKERS=N, N the usable cores: N workers for
              the check pass and N sender processes for the sending
  baseline    the same command on main's code (`git archive main` unpacked in a
              temporary folder, put first on PYTHONPATH): today's product

Every figure is the median over rounds of a ratio computed within a round, as
the shared machine's speed drifts by tens of percent between rounds. Client CPU
is the client process's own (and its worker processes'), per message.
The DKIM scenario sends rsa-2048-signed and unsigned messages, in one process
and with workers, to the C sink.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from sinks import Sink
from throughput import write_rows

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NODE_DIR = HERE / ".node"
# npm ranges are space-separated (a comma is read as a tag name).
# The release line every figure in the notes was measured with (10.6.1). npm
# reads a range with spaces; 7.x ran at ~107 msg/s here, so not "any".
NODEMAILER_MAJOR = 10
NODEMAILER = f"nodemailer@>={NODEMAILER_MAJOR}.6 <{NODEMAILER_MAJOR + 1}"
SENDER = "Example Shop <shop@example.test>"
TEMPLATES = ROOT / "examples" / "templates"


def install_nodemailer() -> None:
    """Install Nodemailer into benchmarks/.node unless the right one is there."""
    installed = NODE_DIR / "node_modules" / "nodemailer" / "package.json"
    if installed.exists():
        version = json.loads(installed.read_text(encoding="utf-8"))["version"]
        if int(version.split(".")[0]) == NODEMAILER_MAJOR:
            return
    NODE_DIR.mkdir(exist_ok=True)
    manifest = NODE_DIR / "package.json"
    if not manifest.exists():
        manifest.write_text('{"private": true}\n', encoding="utf-8")
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("the Nodemailer peer needs Node.js and npm on PATH")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-save", NODEMAILER],
        cwd=NODE_DIR,
        check=True,
        capture_output=True,
    )


def baseline_tree(folder: Path, ref: str) -> tuple[Path, str]:
    """Unpack ``ref``'s tree (git archive) into ``folder``; return it and its commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder, commit


def write_messages(rows: Path, target: Path, dkim_key: Path | None = None) -> None:
    """Render every row with mailer into finished bytes, for the Nodemailer peer."""
    from mailer import MailerSettings, RecipientFile
    from mailer.bulk.sending import render_row
    from mailer.delivery.prepare import Preparer
    from mailer.templates.sets import load_template_set

    values: dict[str, Any] = {
        "_env_file": None,
        "from_": SENDER,
        "templates_dir": TEMPLATES,
    }
    if dkim_key is not None:
        values |= {
            "dkim_domain": "example.test",
            "dkim_selector": "bench",
            "dkim_private_key_file": dkim_key,
        }
    settings = MailerSettings(**values)
    templates = load_template_set("welcome", TEMPLATES)
    preparer = Preparer(settings)
    with target.open("wb") as out:
        for row in RecipientFile(rows):
            message = render_row("welcome", row, settings=settings, templates=templates)  # type: ignore[arg-type]
            prepared = preparer.prepare(message)
            head = {
                "from": prepared.envelope.mail_from,
                "to": list(prepared.envelope.rcpt_tos),
                "length": len(prepared.content),
            }
            out.write(json.dumps(head).encode() + b"\n" + prepared.content)


@dataclass
class Client:
    """One client: how to run it, and its figures round by round."""

    label: str
    kind: str  # nodemailer | mailer
    env: dict[str, str] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(float(r[key]) for r in self.rounds)


def run(client: Client, sink: Sink, rows: Path, messages: Path, count: int) -> None:
    """Run ``client`` once against ``sink``; append its figures."""
    if client.kind == "nodemailer":
        command = [
            "node",
            str(HERE / "nodemailer_peer.mjs"),
            "--port",
            str(sink.port),
            "--messages",
            str(messages),
            "--connections",
            "5",
        ]
    else:
        command = [
            sys.executable,
            str(HERE / "clients.py"),
            "mailer-cli",
            "--port",
            str(sink.port),
            "--csv",
            str(rows),
            "--connections",
            "5",
            "--report",
            str(rows.with_suffix(".report.jsonl")),
        ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env |= client.env
    before = sink.delivered
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, check=False
    )
    try:
        line = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(
            f"{client.label} failed ({done.returncode}): {done.stderr[-2000:]}"
        ) from None
    line["delivered"] = sink.delivered - before
    line["cpu_ms_per_msg"] = 1000 * float(line["cpu_seconds"]) / count
    if line["delivered"] != count or int(line["errors"]):
        print(f"  !! {client.label}: {line}", flush=True)
    client.rounds.append(line)


def per_round(a: Client, b: Client, key: str = "rate") -> list[float]:
    """Return ``a / b`` for ``key`` in each round."""
    return [
        float(x[key]) / float(y[key]) for x, y in zip(a.rounds, b.rounds, strict=True)
    ]


def show_ratio(label: str, values: list[float], target: str = "") -> None:
    rounds = " ".join(f"{v:.2f}" for v in values)
    median = statistics.median(values)
    goal = f"   target {target}" if target else ""
    print(f"  {label:<58}{median:6.2f}x  (rounds: {rounds}){goal}")


def table(title: str, clients: list[Client]) -> None:
    print(f"\n== {title}: medians of {len(clients[0].rounds)} rounds")
    print(f"  {'client':<34}{'msg/s':>9}{'cpu ms/msg':>12}{'rss MB':>9}{'lost':>6}")
    for client in clients:
        lost = max(
            int(r["messages"]) - int(r["delivered"]) - int(r["errors"])
            for r in client.rounds
        )
        print(
            f"  {client.label:<34}{client.median('rate'):>9.1f}"
            f"{client.median('cpu_ms_per_msg'):>12.3f}"
            f"{client.median('peak_rss_mb'):>9.1f}{lost:>6}"
        )


def scenario(
    title: str,
    sink_kind: str,
    clients: list[Client],
    rounds: int,
    rows: Path,
    messages: Path,
    count: int,
) -> None:
    sink = Sink(sink_kind)
    try:
        for number in range(1, rounds + 1):
            for client in clients:
                run(client, sink, rows, messages, count)
                last = client.rounds[-1]
                print(
                    f"  [{title} round {number}] {client.label}: "
                    f"{last['rate']} msg/s, {last['cpu_ms_per_msg']:.3f} ms CPU/msg",
                    flush=True,
                )
    finally:
        sink.stop()
    table(title, clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 messages, 1 round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument(
        "--baseline",
        action="append",
        help="git ref of today's code (repeatable); default: 8a021fe, the main "
        "commit this work started from, and main",
    )
    parser.add_argument("--no-dkim", action="store_true")
    args = parser.parse_args()
    rounds, count = (1, 1000) if args.quick else (args.rounds, args.messages)
    install_nodemailer()
    with tempfile.TemporaryDirectory(prefix="mailer-bench-14-") as name:
        folder = Path(name)
        refs = args.baseline or ["8a021fe", "main"]
        trees = [
            baseline_tree(folder / f"baseline-{n}", ref) for n, ref in enumerate(refs)
        ]
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(
            f"this tree: {head} (+ uncommitted changes, if any); baselines: "
            + ", ".join(f"{r} = {c}" for r, (_, c) in zip(refs, trees, strict=True))
            + f"; {count} messages, {rounds} round(s); {os.cpu_count()} cores"
        )
        rows = folder / "rows.csv"
        write_rows(rows, count)
        messages = folder / "messages.bin"
        write_messages(rows, messages)
        common = {
            "MAILER_TEMPLATES_DIR": str(TEMPLATES),
        }
        # Sender processes are asked for explicitly against these sinks: the
        # automatic default leaves a server on this machine its cores.
        cores = len(os.sched_getaffinity(0))
        results: dict[str, list[Client]] = {}
        for title, sink_kind in (("aiosmtpd sink", "aiosmtpd"), ("C sink", "c")):
            clients = [
                Client("nodemailer (finished bytes)", "nodemailer"),
                Client("mailer (workers: default)", "mailer", dict(common)),
                Client(
                    "mailer-1p (MAILER_WORKERS=1)",
                    "mailer",
                    common | {"MAILER_WORKERS": "1"},
                ),
                Client(
                    f"mailer-{cores}p (MAILER_WORKERS={cores})",
                    "mailer",
                    common | {"MAILER_WORKERS": str(cores)},
                ),
                *(
                    Client(
                        f"baseline {commit}",
                        "mailer",
                        common | {"PYTHONPATH": str(tree)},
                    )
                    for tree, commit in trees
                ),
            ]
            scenario(title, sink_kind, clients, rounds, rows, messages, count)
            results[title] = clients
        dkim: list[Client] = []
        if not args.no_dkim:
            from mailer.content.dkim import generate_key

            key = folder / "bench.pem"
            key.write_bytes(generate_key("rsa", bits=2048).private_pem())
            signed = common | {
                "MAILER_DKIM_DOMAIN": "example.test",
                "MAILER_DKIM_SELECTOR": "bench",
                "MAILER_DKIM_PRIVATE_KEY_FILE": str(key),
            }
            dkim = [
                Client(
                    "unsigned, 1 process", "mailer", common | {"MAILER_WORKERS": "1"}
                ),
                Client(
                    "rsa-2048, 1 process", "mailer", signed | {"MAILER_WORKERS": "1"}
                ),
                Client("unsigned, workers", "mailer", dict(common)),
                Client("rsa-2048, workers", "mailer", dict(signed)),
                *(
                    Client(
                        f"rsa-2048, baseline {commit}",
                        "mailer",
                        signed | {"PYTHONPATH": str(tree)},
                    )
                    for tree, commit in trees
                ),
            ]
            scenario("DKIM, C sink", "c", dkim, rounds, rows, messages, count)

    print("\n== Issue 14, done when (medians of per-round ratios)")
    for title, clients in results.items():
        peer, mailer, one, every_core, *bases = clients
        show_ratio(
            f"{title}: mailer / nodemailer (rate)", per_round(mailer, peer), ">= 1.5"
        )
        show_ratio(f"{title}: mailer-1p / nodemailer (rate)", per_round(one, peer))
        for base in bases:
            show_ratio(
                f"{title}: {base.label} / nodemailer (rate)", per_round(base, peer)
            )
            show_ratio(
                f"{title}: mailer-1p / {base.label} (CPU per message)",
                per_round(one, base, "cpu_ms_per_msg"),
                "<= 0.5",
            )
            show_ratio(
                f"{title}: mailer / {base.label} (CPU per message)",
                per_round(mailer, base, "cpu_ms_per_msg"),
                "<= 0.5",
            )
        show_ratio(
            f"{title}: mailer-{cores}p / mailer-1p (rate, every core asked for)",
            per_round(every_core, one),
            ">= 1.7 (C sink)",
        )
        show_ratio(
            f"{title}: mailer / mailer-1p (rate, the automatic default)",
            per_round(mailer, one),
        )
        for base in bases:
            show_ratio(
                f"{title}: mailer-{cores}p / {base.label} (CPU per message)",
                per_round(every_core, base, "cpu_ms_per_msg"),
            )
    if dkim:
        u1, s1, u2, s2, *signed_bases = dkim
        show_ratio(
            "DKIM: signed / unsigned, 1 process (rate)", per_round(s1, u1), ">= 0.5"
        )
        show_ratio(
            "DKIM: signed / unsigned, workers (rate)", per_round(s2, u2), ">= 0.5"
        )
        show_ratio("DKIM: signed with workers / unsigned 1 process", per_round(s2, u1))
        show_ratio("DKIM: signed with workers / signed 1 process", per_round(s2, s1))
        for sb in signed_bases:
            show_ratio(f"DKIM: signed 1 process / {sb.label}", per_round(s1, sb))


if __name__ == "__main__":
    main()
