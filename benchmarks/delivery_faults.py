"""Print the delivery figures of issue 4: faults, a kill -9, refusals, a silent server.

Run from the repository root (about a minute on 2 cores)::

    .venv/bin/python benchmarks/delivery_faults.py [--messages 5000] [--seed 7]

Every server is mailer.testing.SMTPTestServer on 127.0.0.1, in this process.
Retries wait milliseconds here (MAILER_RETRY_BACKOFF=0.01, _MAX_BACKOFF=0.2)
instead of the default 1 s doubling to 60 s: the policy is the same, only the
clock is faster. MAILER_MAX_ATTEMPTS is 10 so that a 20% fault rate almost
never exhausts a message (0.2 ** 10 = 1e-7 per message).

1. Chaos: N messages through a server that hits about 20% of transactions with
   a random transient fault (421, 451, a hang-up at MAIL/RCPT, in the middle
   of DATA, or after the final dot, with the message lost or kept). Checked:
   every message ends sent; every message delivered twice was counted
   ambiguous; no permanent failure is reported. Throughput is compared with a
   fault-free run of the same batch, measured just before.
2. kill -9: the same through `mailer send --journal` in a subprocess, killed at
   a random moment, then the same command again. Checked: every message
   delivered; the ones delivered twice were all counted ambiguous; those due
   to the kill are at most the transactions in flight (MAILER_CONCURRENCY).
3. Refusals: a 550 recipient is tried once and reported with its reply; a 452
   for one of three recipients resends to that one only.
4. Silence: a server that never greets, never answers MAIL, or never answers
   the final dot fails after the configured timeouts, not later.
5. Malformed final replies: a server that stores the message and then answers
   the final dot with garbage, a reply line too long for aiosmtplib, or a line
   without a code (60 times in N/5 messages). Checked: every message ends sent;
   every message delivered twice was counted ambiguous, and every ambiguous one
   was delivered twice (the server kept each message it answered badly).
6. A recipients file rewritten in place while `mailer send` runs, with and
   without `--journal`: the run stops at the first row that differs from the
   one checked (exit 2, the file to fix). Checked: nothing mailed to an address
   outside the original file, every row has its report line (the rest
   `pending`), the journal's `sent` entries are exactly the addresses mailed,
   and once the file is put back the resume mails every address exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailer import (
    DeliveryTimeoutError,
    Message,
    MessageClient,
    RecipientFile,
    SendStatus,
    send_messages,
)
from mailer.replies import RecipientStatus
from mailer.testing import END_OF_DATA, SMTPTestServer

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "examples" / "templates"
CONCURRENCY = 5
PER_TRANSACTION_FAULT_RATE = 0.20
# Chaos draws at MAIL, RCPT, DATA and the final dot: 1 - (1 - r) ** 4 = 20%.
PER_COMMAND_RATE = 1 - (1 - PER_TRANSACTION_FAULT_RATE) ** 0.25
FAST_RETRIES = {
    "max_attempts": 10,
    "retry_backoff": 0.01,
    "retry_max_backoff": 0.2,
    "send_deadline": 300,
}


def write_recipients(path: Path, count: int) -> RecipientFile:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "customer_id", "plan"])
        for n in range(count):
            writer.writerow([f"user{n}@example.test", f"User {n}", f"C-{n}", "pro"])
    return RecipientFile(path)


def settings_for(server: SMTPTestServer, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "from_": "Shop <shop@example.test>",
        "templates_dir": TEMPLATES,
        "concurrency": CONCURRENCY,
        **FAST_RETRIES,
    }
    values.update(overrides)
    return server.settings(**values)


def copies_by_id(server: SMTPTestServer) -> Counter[str]:
    return Counter(str(mail.message["Message-ID"]) for mail in server.outbox)


def transactions(server: SMTPTestServer) -> int:
    return sum(
        1
        for lines in server.transcripts
        for line in lines
        if line.startswith("C: MAIL")
    )


def fault_kinds(server: SMTPTestServer) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for lines in server.transcripts:
        for before, line in itertools.pairwise(lines):
            if line.startswith("S: 4"):
                kinds[line[3:6]] += 1
            elif line == "S: <connection closed>" and not before.startswith("S: 4"):
                if before == "C: .":
                    where = "after the dot"
                elif before.startswith("C: <"):
                    where = "in the middle of DATA"
                else:
                    where = f"at {before[3:7].strip()}"
                kinds[f"hang-up {where}"] += 1
    return kinds


async def chaos_run(count: int, seed: int, folder: Path) -> dict[str, float]:
    """Scenario 1: a fault-free baseline, then the same batch under chaos."""
    recipients = write_recipients(folder / "chaos.csv", count)
    async with SMTPTestServer() as clean:
        started = time.perf_counter()
        baseline = await send_messages(
            "welcome", recipients, settings=settings_for(clean)
        )
        baseline_time = time.perf_counter() - started
    assert baseline.sent == count, baseline.summary()

    async with SMTPTestServer() as server:
        server.faults.chaos(seed=seed, rate=PER_COMMAND_RATE, disconnects=True)
        started = time.perf_counter()
        report = await send_messages(
            "welcome", recipients, settings=settings_for(server)
        )
        chaos_time = time.perf_counter() - started
    copies = copies_by_id(server)
    duplicated = {mid for mid, n in copies.items() if n > 1}
    ambiguous = {r.message_id for r in report.results if r.ambiguous}
    rejected = sum(
        1
        for r in report.results
        for status in r.recipients.values()
        if status is RecipientStatus.REJECTED
    )
    attempts = Counter(r.attempts for r in report.results)
    faulted = count_faulted(server)
    total = transactions(server)
    print(f"== 1. chaos: {count} messages, seed {seed}, concurrency {CONCURRENCY}")
    print(
        f"transactions {total}, hit by a fault {faulted} "
        f"({faulted / total:.1%}; target {PER_TRANSACTION_FAULT_RATE:.0%})"
    )
    print("faults:", dict(sorted(fault_kinds(server).items())))
    print(
        f"result: {report.sent} sent ({report.sent / count:.2%}), "
        f"{report.failed} failed, {report.pending} pending"
    )
    print(f"attempts per message: {dict(sorted(attempts.items()))}")
    print(
        f"delivered: {len(copies)} distinct Message-IDs, {len(duplicated)} delivered "
        f"twice; ambiguous counted: {len(ambiguous)}; duplicates not counted "
        f"ambiguous: {len(duplicated - ambiguous)}"
    )
    print(f"permanent failures reported (all faults were transient): {rejected}")
    print(
        f"throughput: baseline {count / baseline_time:.0f} msg/s, chaos "
        f"{count / chaos_time:.0f} msg/s (ratio {baseline_time / chaos_time:.2f})"
    )
    ok = (
        report.sent == count
        and len(copies) == count
        and not duplicated - ambiguous
        and rejected == 0
        and report.failed == 0
    )
    print("CHECK 1:", "PASS" if ok else "FAIL")
    return {"baseline_time": baseline_time, "ok": float(ok)}


def count_faulted(server: SMTPTestServer) -> int:
    """Transactions in which chaos fired (one firing ends a transaction)."""
    return len(server.faults.firings)


def cli_env(server: SMTPTestServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        {
            "MAILER_SMTP_HOST": server.host,
            "MAILER_SMTP_PORT": str(server.port),
            "MAILER_SMTP_TLS": "none",
            "MAILER_FROM": "Shop <shop@example.test>",
            "MAILER_TEMPLATES_DIR": str(TEMPLATES),
            "MAILER_CONCURRENCY": str(CONCURRENCY),
            "MAILER_MAX_ATTEMPTS": str(FAST_RETRIES["max_attempts"]),
            "MAILER_RETRY_BACKOFF": str(FAST_RETRIES["retry_backoff"]),
            "MAILER_RETRY_MAX_BACKOFF": str(FAST_RETRIES["retry_max_backoff"]),
        }
    )
    return env


async def run_cli(
    server: SMTPTestServer, folder: Path, *, kill_after: float | None = None
) -> tuple[int, str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailer",
        "send",
        "-t",
        "welcome",
        "-r",
        str(folder / "kill.csv"),
        "--journal",
        str(folder / "kill.journal"),
        cwd=folder,
        env=cli_env(server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    started = time.perf_counter()
    if kill_after is not None:
        await asyncio.sleep(kill_after)
        process.send_signal(signal.SIGKILL)
    stdout, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), time.perf_counter() - started


def read_only(path: Path) -> sqlite3.Connection:
    # Read-only: a read-write connection, closed last after a kill -9, would
    # fold the write-ahead log into the file, which a resume then refuses
    # (it cannot tell that from a journal copied without its -wal).
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def journal_states(path: Path) -> dict[str, str]:
    with contextlib.closing(read_only(path)) as db:
        return dict(db.execute("SELECT email, state FROM messages").fetchall())


def journal_ambiguous_ids(path: Path) -> set[str]:
    with contextlib.closing(read_only(path)) as db:
        rows = db.execute("SELECT message_id FROM messages WHERE ambiguous = 1")
        return {row[0] for row in rows}


async def kill_run(count: int, seed: int, folder: Path, expected: float) -> bool:
    """Scenario 2: kill -9 the CLI at a random moment, then run it again."""
    write_recipients(folder / "kill.csv", count)
    moment = random.Random(seed).uniform(0.2 * expected, 0.8 * expected)
    async with SMTPTestServer() as server:
        server.faults.chaos(seed=seed + 1, rate=PER_COMMAND_RATE, disconnects=True)
        code, _, _ = await run_cli(server, folder, kill_after=1.0 + moment)
        delivered_at_kill = len(server.outbox)
        states = journal_states(folder / "kill.journal")
        in_flight = [email for email, s in states.items() if s == "sending"]
        state_counts = Counter(states.values())
        code2, stdout2, resume_time = await run_cli(server, folder)
    copies = copies_by_id(server)
    per_recipient = Counter(mail.envelope.rcpt_tos[0] for mail in server.outbox)
    duplicated = {mid for mid, n in copies.items() if n > 1}
    ambiguous = journal_ambiguous_ids(folder / "kill.journal")
    final_states = Counter(journal_states(folder / "kill.journal").values())
    print(f"== 2. kill -9: {count} messages through the CLI with --journal, chaos on")
    print(
        f"killed after {1.0 + moment:.2f}s (exit {code}); the server had "
        f"{delivered_at_kill} messages; journal at the kill: "
        f"{dict(sorted(state_counts.items()))}"
    )
    print(f"in flight at the kill ('sending'): {len(in_flight)} (<= {CONCURRENCY})")
    resumed_line = next(
        (line for line in stdout2.splitlines() if line.startswith("resumed:")), ""
    )
    print(f"resume (exit {code2}, {resume_time:.1f}s): {resumed_line}")
    print(f"resume summary: {stdout2.splitlines()[-2] if stdout2 else ''}")
    print(f"journal after the resume: {dict(sorted(final_states.items()))}")
    kill_dups = {
        str(mail.message["Message-ID"])
        for mail in server.outbox
        if mail.envelope.rcpt_tos[0] in in_flight
    } & duplicated
    print(
        f"recipients who got it: {len(per_recipient)} of {count}; Message-IDs "
        f"delivered twice: {len(duplicated)} (from the kill: {len(kill_dups)}, "
        f"from chaos hang-ups after the dot: {len(duplicated - kill_dups)}); "
        f"counted ambiguous: {len(ambiguous)}; duplicates not counted "
        f"ambiguous: {len(duplicated - ambiguous)}"
    )
    ok = (
        code == -signal.SIGKILL
        and code2 == 0
        and len(per_recipient) == count
        and final_states == Counter({"sent": count})
        and not duplicated - ambiguous
        and len(kill_dups) <= len(in_flight) <= CONCURRENCY
    )
    print("CHECK 2:", "PASS" if ok else "FAIL")
    return ok


async def refusal_run() -> bool:
    """Scenario 3: 550 is final; 452 for one of three resends to that one."""
    three = ["ann@example.test", "bob@example.test", "cy@example.test"]
    async with SMTPTestServer() as server:
        no_user = server.faults.reply(
            "RCPT", 550, "5.1.1 <cy@example.test>: no such user", recipient=three[2]
        )
        full = server.faults.reply(
            "RCPT", 452, "4.2.2 mailbox full", recipient=three[1], times=1
        )
        async with MessageClient(settings_for(server)) as client:
            result = await client.send(Message(to=three, subject="Invoice", body="b"))
    envelopes = [mail.envelope.rcpt_tos for mail in server.outbox]
    print("== 3. refusals: one message to ann, bob (452 once) and cy (550 always)")
    print(f"transactions delivered: {envelopes}")
    print(f"RCPT for cy answered 550: {no_user.fired} time(s); bob's 452: {full.fired}")
    print(
        f"result: {result.status.value}, attempts {result.attempts}, "
        f"recipients { {r: s.value for r, s in result.recipients.items()} }"
    )
    print(f"cy reported with: {result.refused.get(three[2])}")
    ok = (
        envelopes == [(three[0],), (three[1],)]
        and no_user.fired == 1
        and result.recipients[three[2]] is RecipientStatus.REJECTED
        and result.refused[three[2]].code == 550
        and result.status is SendStatus.SENT
    )
    print("CHECK 3:", "PASS" if ok else "FAIL")
    return ok


async def silence_run() -> bool:
    """Scenario 4: servers that never answer fail after the configured timeouts."""
    print("== 4. a server that never answers (max_attempts 2, retry wait <= 0.2 s)")
    ok = True
    cases: list[tuple[str, Callable[[SMTPTestServer], object], dict[str, float]]] = [
        ("never greets", lambda s: s.faults.no_greeting(), {"greeting_timeout": 1.0}),
        ("never answers MAIL", lambda s: s.faults.delay("MAIL", 600), {"timeout": 1.0}),
        (
            "never answers the final dot",
            lambda s: s.faults.delay(END_OF_DATA, 600),
            {"message_timeout": 1.0},
        ),
    ]
    for name, plan, limits in cases:
        async with SMTPTestServer() as server:
            plan(server)
            timeouts = {"timeout": 30.0, "greeting_timeout": 30.0}
            timeouts |= {"message_timeout": 30.0, **limits}
            settings = settings_for(server, **timeouts, max_attempts=2)
            started = time.perf_counter()
            async with MessageClient(settings) as client:
                try:
                    await client.send(
                        Message(to="a@example.test", subject="s", body="b")
                    )
                    outcome = "sent?!"
                except DeliveryTimeoutError as exc:
                    outcome = f"DeliveryTimeoutError after {exc.attempts} attempts"
            elapsed = time.perf_counter() - started
        limit = next(iter(limits.values()))
        bound = 2 * limit + FAST_RETRIES["retry_max_backoff"] + 0.5
        within = 2 * limit <= elapsed <= bound
        ok = ok and within and outcome.startswith("DeliveryTimeoutError")
        print(
            f"{name}: {outcome}; {elapsed:.2f}s for 2 x {next(iter(limits))}="
            f"{limit:g}s (allowed {2 * limit:.1f}-{bound:.1f}s)"
        )
    print("CHECK 4:", "PASS" if ok else "FAIL")
    return ok


async def malformed_run(count: int, folder: Path) -> bool:
    """Scenario 5: stored, then a malformed reply after the dot: counted ambiguous."""
    recipients = write_recipients(folder / "malformed.csv", count)
    async with SMTPTestServer() as server:
        rules = [
            server.faults.malformed_final_reply(form, times=20, after=after)
            for form, after in (("garbage", 10), ("too_long", 40), ("no_code", 70))
        ]
        report = await send_messages(
            "welcome", recipients, settings=settings_for(server)
        )
    copies = copies_by_id(server)
    duplicated = {mid for mid, n in copies.items() if n > 1}
    ambiguous = {r.message_id for r in report.results if r.ambiguous}
    extra_copies = sum(n - 1 for n in copies.values())
    fired = {rule.description.split("(")[1].split(")")[0]: rule.fired for rule in rules}
    print(f"== 5. malformed final replies: {count} messages, concurrency {CONCURRENCY}")
    print(f"faults fired (message kept, then a bad line): {fired}")
    print(
        f"result: {report.sent} sent, {report.failed} failed, {report.pending} pending"
    )
    print(
        f"delivered: {len(copies)} distinct Message-IDs, {extra_copies} extra "
        f"copies ({len(duplicated)} messages); ambiguous counted: "
        f"{len(ambiguous)}; duplicates not counted ambiguous: "
        f"{len(duplicated - ambiguous)}; ambiguous but not duplicated: "
        f"{len(ambiguous - duplicated)}"
    )
    ok = (
        report.sent == count
        and len(copies) == count
        and extra_copies == sum(fired.values()) == 60
        and duplicated == ambiguous
    )
    print("CHECK 5:", "PASS" if ok else "FAIL")
    return ok


async def change_run(count: int, folder: Path) -> bool:
    """Scenario 5: the recipients file rewritten in place under a run."""
    print(f"== 6. {count} rows, the file rewritten in place while mailer send runs")
    original = {f"user{n}@example.test" for n in range(count)}
    ok = True
    for journaled in (False, True):
        work = folder / ("change-journal" if journaled else "change-plain")
        work.mkdir()
        recipients = write_recipients(work / "recipients.csv", count).path
        journal = work / "batch.journal"
        report = work / "report.jsonl"
        args = ["--report", str(report)]
        if journaled:
            args += ["--journal", str(journal)]
        async with SMTPTestServer() as server:
            server.faults.delay(END_OF_DATA, 0.01)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mailer", "send", "-t", "welcome", "-r",
                str(recipients), *args, cwd=work, env=cli_env(server),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            while len(server.outbox) < count // 10:  # noqa: ASYNC110 - polls the server
                await asyncio.sleep(0.01)
            with recipients.open("r+", encoding="utf-8") as handle:
                handle.truncate(0)  # in place, every row a few bytes shorter
                handle.write("email,name,customer_id,plan\n")
                handle.writelines(
                    f"u{n}@example.test,User {n},C-{n},pro\n" for n in range(count)
                )
            _, stderr = await process.communicate()
            mailed = [r for mail in server.outbox for r in mail.envelope.rcpt_tos]
            lines = [json.loads(x) for x in report.read_text().splitlines()]
            pending = sum(line["status"] == "pending" for line in lines)
            run_ok = (
                process.returncode == 2
                and b"changed while the batch was running" in stderr
                and set(mailed) <= original
                and len(mailed) == len(set(mailed))
                and len(lines) == count
                and pending == count - len(mailed)
            )
            kind = "journal" if journaled else "no journal"
            print(
                f"{kind}: exit {process.returncode}; mailed {len(mailed)} before the "
                f"change was met, {pending} pending; report lines {len(lines)} of "
                f"{count}; mailed outside the original file: "
                f"{len(set(mailed) - original)}"
            )
            if journaled:
                states = journal_states(journal)
                sent = {email for email, state in states.items() if state == "sent"}
                run_ok = run_ok and sent == set(mailed)
                print(
                    f"journal 'sent' entries: {len(sent)}; equal to the addresses "
                    f"mailed: {sent == set(mailed)}"
                )
                write_recipients(recipients, count)  # put back
                resume = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "mailer", "send", "-t", "welcome", "-r",
                    str(recipients), "--journal", str(journal), cwd=work,
                    env=cli_env(server), stdout=subprocess.PIPE,
                )  # fmt: skip
                await resume.communicate()
                copies = Counter(
                    r for mail in server.outbox for r in mail.envelope.rcpt_tos
                )
                once = set(copies) == original and set(copies.values()) == {1}
                print(
                    f"resume after putting the file back: exit {resume.returncode}; "
                    f"every address mailed exactly once: {once}"
                )
                run_ok = run_ok and resume.returncode == 0 and once
            ok = ok and run_ok
    print("CHECK 6:", "PASS" if ok else "FAIL")
    return ok


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--only", type=int, choices=(3, 4, 5, 6), help="run this scenario alone"
    )
    args = parser.parse_args()
    if args.only is not None:
        with tempfile.TemporaryDirectory(prefix="mailer-faults-") as name:
            alone = {
                3: refusal_run,
                4: silence_run,
                5: lambda: malformed_run(max(args.messages // 5, 200), Path(name)),
                6: lambda: change_run(min(args.messages, 2000), Path(name)),
            }
            passed = await alone[args.only]()
        return 0 if passed else 1
    with tempfile.TemporaryDirectory(prefix="mailer-faults-") as name:
        folder = Path(name)
        first = await chaos_run(args.messages, args.seed, folder)
        second = await kill_run(
            args.messages, args.seed, folder, expected=first["baseline_time"]
        )
        third = await refusal_run()
        fourth = await silence_run()
        fifth = await malformed_run(max(args.messages // 5, 200), folder)
        sixth = await change_run(min(args.messages, 2000), folder)
    results = [bool(first["ok"]), second, third, fourth, fifth, sixth]
    print("ALL CHECKS:", "PASS" if all(results) else "FAIL")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
