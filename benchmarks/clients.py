"""The clients the throughput benchmark compares; each run is its own process.

  python benchmarks/clients.py CLIENT --port P --csv rows.csv [--connections K]

prints one JSON line: messages, seconds, rate, errors, CPU seconds and peak RSS.
Every client renders the same Jinja2 template set (text + HTML) for the same
CSV rows, except the ceiling client, which sends messages built beforehand.

  naive     asyncio.gather over aiosmtplib.send(): a connection per message,
            no bound (the tutorial way)
  smtplib   smtplib on one reused connection
  aiosmtplib  aiosmtplib on K reused connections, building with EmailMessage
  ceiling   pre-serialised messages, PIPELINING over 4 raw connections (one
            round trip per message: content + next envelope in one write)
  mailer    mailer's send_messages with default settings (K = concurrency)
  mailer-cli  `mailer send -t welcome -r rows.csv --report FILE`, run in this
            process once its modules are loaded (the clock starts there, as
            Node's does once nodemailer is loaded)
  mailer-worker  mailer, rendering and building on a worker process
  mailer-100k    mailer sending a big CSV, reporting peak RSS at 10k and at the end
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import resource
import smtplib
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import jinja2

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "examples" / "templates"
TEMPLATE = "welcome"
SENDER = "Example Shop <shop@example.test>"
HOST = "127.0.0.1"


def peak_rss_mb() -> float:
    """Return this process's peak resident set size so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """Return the CPU time of this process and of its children (worker processes)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


class StdlibTemplates:
    """The same template set, rendered with plain Jinja2 (compiled once)."""

    def __init__(self) -> None:
        folder = TEMPLATES / TEMPLATE
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader([folder, TEMPLATES]),
            autoescape=jinja2.select_autoescape(["html"], default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
        )
        self.subject = environment.get_template("subject.txt")
        self.text = environment.get_template("body.txt")
        self.html = environment.get_template("body.html")

    def email_message(self, row: dict[str, str]) -> EmailMessage:
        """Render a row and assemble it the usual way, with EmailMessage."""
        message = EmailMessage()
        message["From"] = SENDER
        message["To"] = f"{row['name']} <{row['email']}>"
        message["Subject"] = self.subject.render(row).rstrip("\n")
        message.set_content(self.text.render(row))
        message.add_alternative(self.html.render(row), subtype="html")
        return message


# --------------------------------------------------------------------- clients


async def run_naive(port: int, rows: list[dict[str, str]], _: int) -> int:
    templates = StdlibTemplates()
    messages = [templates.email_message(row) for row in rows]
    outcomes = await asyncio.gather(
        *(aiosmtplib.send(m, hostname=HOST, port=port) for m in messages),
        return_exceptions=True,
    )
    return sum(isinstance(outcome, BaseException) for outcome in outcomes)


async def run_smtplib(port: int, rows: list[dict[str, str]], _: int) -> int:
    templates = StdlibTemplates()
    errors = 0
    connection = smtplib.SMTP(HOST, port)
    try:
        for row in rows:
            try:
                connection.send_message(templates.email_message(row))
            except smtplib.SMTPServerDisconnected:
                errors += 1
                connection = smtplib.SMTP(HOST, port)
            except smtplib.SMTPException:
                errors += 1
    finally:
        connection.quit()
    return errors


async def run_aiosmtplib(port: int, rows: list[dict[str, str]], k: int) -> int:
    templates = StdlibTemplates()
    source = iter(rows)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        async with aiosmtplib.SMTP(hostname=HOST, port=port) as smtp:
            for row in source:
                try:
                    await smtp.send_message(templates.email_message(row))
                except aiosmtplib.SMTPException:
                    errors += 1

    await asyncio.gather(*(worker() for _ in range(k)))
    return errors


def prebuilt(rows: list[dict[str, str]]) -> list[tuple[str, bytes]]:
    """Render and build every message before the clock starts (ceiling client)."""
    from mailer import Address, MailerSettings
    from mailer.bulk.sending import _row as to_recipient
    from mailer.bulk.sending import render_row
    from mailer.content.serialize import format_date, new_message_id

    settings = MailerSettings(_env_file=None, templates_dir=TEMPLATES, from_=SENDER)
    sender = Address.parse(SENDER, field="sender")
    date = format_date()
    built = []
    for position, row in enumerate(rows, start=1):
        recipient = to_recipient(row, position)
        message = render_row(TEMPLATE, recipient, settings=settings)  # type: ignore[arg-type]
        content = message.to_bytes(sender, message_id=new_message_id(sender), date=date)
        built.append((row["email"], content))
    return built


async def run_ceiling(port: int, built: list[tuple[str, bytes]], k: int) -> int:
    """Pipeline pre-built messages: content + next envelope in one write."""
    from mailer.transports.smtp.pipelining import wire_content

    errors = 0

    async def connection(share: list[tuple[str, bytes]]) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(HOST, port)

        async def reply() -> bytes:
            while True:
                line = await reader.readline()
                if line[3:4] != b"-":
                    return line

        await reply()
        writer.write(b"EHLO ceiling\r\n")
        await reply()

        def envelope(rcpt: str) -> bytes:
            return (
                b"MAIL FROM:<shop@example.test>\r\nRCPT TO:<"
                + rcpt.encode()
                + b">\r\nDATA\r\n"
            )

        writer.write(envelope(share[0][0]))
        for index, (_, content) in enumerate(share):
            codes = [await reply() for _ in range(3)]
            if [c[:3] for c in codes] != [b"250", b"250", b"354"]:
                errors += 1
            following = envelope(share[index + 1][0]) if index + 1 < len(share) else b""
            writer.write(wire_content(content) + following)
            if (await reply())[:3] != b"250":
                errors += 1
        writer.write(b"QUIT\r\n")
        await reply()
        writer.close()

    shares = [built[i::k] for i in range(k)]
    await asyncio.gather(*(connection(share) for share in shares if share))
    return errors


def mailer_settings(port: int, k: int | None) -> Any:
    from mailer import MailerSettings

    values: dict[str, Any] = {
        "_env_file": None,
        "smtp_host": HOST,
        "smtp_port": port,
        "smtp_tls": "none",
        "from_": SENDER,
        "templates_dir": TEMPLATES,
    }
    if k is not None:
        values["concurrency"] = k
    return MailerSettings(**values)


async def run_mailer(port: int, csv_path: Path, k: int | None) -> int:
    from mailer import RecipientFile, send_messages

    report = await send_messages(
        TEMPLATE, RecipientFile(csv_path), settings=mailer_settings(port, k)
    )
    return report.failed + report.invalid


def run_mailer_cli(port: int, csv_path: Path, k: int | None, report: Path) -> int:
    """Run ``mailer send`` as a user would, its modules already loaded."""
    import os

    from mailer.cli.app import app

    os.environ.update(
        {
            "MAILER_SMTP_HOST": HOST,
            "MAILER_SMTP_PORT": str(port),
            "MAILER_SMTP_TLS": "none",
            "MAILER_FROM": SENDER,
            "MAILER_TEMPLATES_DIR": str(TEMPLATES),
        }
    )
    if k is not None:
        os.environ["MAILER_CONCURRENCY"] = str(k)
    arguments = ["send", "-t", TEMPLATE, "-r", str(csv_path), "--report", str(report)]
    try:
        app(arguments, standalone_mode=False)
    except SystemExit as exit_:  # typer.Exit is raised as click's Exit
        return 0 if not exit_.code else -1
    except Exception as exc:  # click.exceptions.Exit carries exit_code
        code = getattr(exc, "exit_code", None)
        if code is None:
            raise
        return 0 if code == 0 else -1
    return 0


def _render_chunk(
    rows: list[dict[str, str]],
) -> list[tuple[str, tuple[str, ...], bytes]]:
    """Worker process: render and build a chunk of rows into envelopes and bytes."""
    from mailer import Address, MailerSettings
    from mailer.bulk.sending import _row as to_recipient
    from mailer.bulk.sending import render_row
    from mailer.content.serialize import format_date, new_message_id

    settings = MailerSettings(_env_file=None, templates_dir=TEMPLATES, from_=SENDER)
    sender = Address.parse(SENDER, field="sender")
    date = format_date()
    out = []
    for position, row in enumerate(rows, start=1):
        recipient = to_recipient(row, position)
        message = render_row(TEMPLATE, recipient, settings=settings)  # type: ignore[arg-type]
        envelope = message.envelope(sender)
        content = message.to_bytes(sender, message_id=new_message_id(sender), date=date)
        out.append((envelope.mail_from, envelope.rcpt_tos, content))
    return out


async def run_mailer_worker(port: int, csv_path: Path, k: int | None) -> int:
    """Experiment: a worker process renders and builds; this one only sends."""
    from mailer.content.message import Envelope
    from mailer.delivery.bounded import stream_batch
    from mailer.transports import SMTPTransport

    rows = read_rows(csv_path)
    settings = mailer_settings(port, k)
    chunks = [rows[i : i + 250] for i in range(0, len(rows), 250)]
    loop = asyncio.get_running_loop()

    with ProcessPoolExecutor(max_workers=1) as pool:

        async def built() -> AsyncIterator[tuple[str, tuple[str, ...], bytes]]:
            # Keep the worker one chunk ahead of the sending.
            ahead = [loop.run_in_executor(pool, _render_chunk, c) for c in chunks[:2]]
            for index in range(len(chunks)):
                items = await ahead[index]
                if index + 2 < len(chunks):
                    ahead.append(
                        loop.run_in_executor(pool, _render_chunk, chunks[index + 2])
                    )
                for item in items:
                    yield item

        async with SMTPTransport(settings) as transport:

            async def deliver(item: tuple[str, tuple[str, ...], bytes]) -> bool:
                try:
                    await transport.deliver(Envelope(item[0], item[1]), item[2])
                except Exception:  # noqa: BLE001 - counted as an error
                    return False
                return True

            width = settings.concurrency * 3
            outcomes = [
                done.result
                async for done in stream_batch(built(), deliver, max_running=width)
            ]
    return outcomes.count(False)


async def run_mailer_100k(
    port: int, csv_path: Path, report_path: Path
) -> dict[str, Any]:
    """Send a big CSV like `mailer send --report`: stream results to a file."""
    from mailer import RecipientFile, send_messages

    marks: dict[str, float] = {}
    done = 0
    with report_path.open("w", encoding="utf-8") as report:

        def record(result: Any) -> None:
            nonlocal done
            report.write(json.dumps(result.to_report()) + "\n")
            done += 1
            if done in (1_000, 10_000, 50_000, 100_000):
                marks[f"peak_rss_mb_at_{done}"] = round(peak_rss_mb(), 1)

        batch = await send_messages(
            TEMPLATE,
            RecipientFile(csv_path),
            settings=mailer_settings(port, None),
            on_result=record,
            keep_results=False,
        )
    marks["errors"] = batch.failed + batch.invalid
    marks["sent"] = batch.sent
    return marks


# ------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=None)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    k = args.connections
    extra: dict[str, Any] = {}
    if args.client.startswith("mailer"):
        # Like smtplib, aiosmtplib and jinja2 for the others (imported at the
        # top), mailer's modules load before the clock starts.
        import mailer.bulk.sending
        import mailer.transports

    # mailer reads the CSV itself, row by row; the others get the rows in a list.
    if args.client == "mailer":
        job: Any = run_mailer(args.port, args.csv, k)
    elif args.client == "mailer-cli":
        import mailer.cli.app  # noqa: F401

        job = None
        report = args.report or Path(f"{args.csv}.report.jsonl")
    elif args.client == "mailer-worker":
        job = run_mailer_worker(args.port, args.csv, k)
    elif args.client == "mailer-100k":
        job = run_mailer_100k(args.port, args.csv, args.report)
    elif args.client == "ceiling":
        built = prebuilt(read_rows(args.csv))
        job = run_ceiling(args.port, built, k or 4)
    else:
        runner = {
            "naive": run_naive,
            "smtplib": run_smtplib,
            "aiosmtplib": run_aiosmtplib,
        }
        job = runner[args.client](args.port, read_rows(args.csv), k or 5)
    count = sum(1 for _ in open(args.csv, encoding="utf-8")) - 1  # noqa: SIM115
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    if args.client == "mailer-cli":
        outcome: Any = run_mailer_cli(args.port, args.csv, k, report)
    else:
        outcome = asyncio.run(job)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    if args.client == "mailer-cli":
        unsent = sum(
            json.loads(line).get("status") != "sent"
            for line in report.open(encoding="utf-8")
        )
        outcome = unsent if outcome == 0 else max(1, unsent)
    if isinstance(outcome, dict):
        extra = outcome
        errors = int(outcome["errors"])
    else:
        errors = int(outcome)
    line = {
        "client": args.client,
        "messages": count,
        "seconds": round(seconds, 3),
        "rate": round(count / seconds, 1),
        "errors": errors,
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **extra,
    }
    print(json.dumps(line))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
