"""Time mailer's message builder against EmailMessage + as_bytes() on 10,000 messages.

    .venv/bin/python benchmarks/builder.py [--messages 10000] [--rounds 3]

Both sides start from the same rendered messages (the example template set,
text + HTML, one recipient in four with a non-ASCII name) and produce the bytes
sent after DATA, with CRLF line ends. Rendering is not timed. Rounds are
interleaved; the figure is the median.
"""

from __future__ import annotations

import argparse
import email.policy
import statistics
import time
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from mailer import Address, MailerSettings, Message
from mailer.bulk.recipients import Recipient
from mailer.bulk.sending import render_row
from mailer.content.serialize import format_date, new_message_id

ROOT = Path(__file__).resolve().parent.parent
SENDER = "Example Shop <shop@example.test>"


def rendered(count: int) -> list[Message]:
    settings = MailerSettings(
        _env_file=None, templates_dir=ROOT / "examples" / "templates", from_=SENDER
    )
    messages = []
    for n in range(count):
        name = f"Zoë Client {n}" if n % 4 == 0 else f"Client {n}"
        row = {
            "email": f"user{n}@example.test",
            "name": name,
            "customer_id": f"C-{n:06d}",
            "plan": "pro" if n % 3 == 0 else "basic",
        }
        recipient = Recipient(n + 1, row["email"], name, row)
        messages.append(render_row("welcome", recipient, settings=settings))
    return messages


def with_mailer(messages: list[Message], sender: Address, date: str) -> list[bytes]:
    return [
        message.to_bytes(sender, message_id=new_message_id(sender), date=date)
        for message in messages
    ]


def with_email_message(
    messages: list[Message], sender: Address, date: str
) -> list[bytes]:
    out = []
    for message in messages:
        built = EmailMessage()
        built["From"] = str(sender)
        built["To"] = [str(address) for address in message.to]
        built["Subject"] = message.subject
        built["Date"] = date
        built["Message-ID"] = new_message_id(sender)
        built.set_content(message.body)
        if message.html is not None:
            built.add_alternative(message.html, subtype="html")
        out.append(built.as_bytes(policy=email.policy.SMTP))
    return out


def same_content(ours: bytes, theirs: bytes) -> bool:
    """Check that both parse to the same subject, recipients and bodies."""
    parser = BytesParser(policy=email.policy.default)
    a, b = parser.parsebytes(ours), parser.parsebytes(theirs)
    parts = [("plain",), ("html",)]
    return (
        str(a["Subject"]) == str(b["Subject"])
        and str(a["To"]) == str(b["To"])
        and all(
            a.get_body(p).get_content() == b.get_body(p).get_content()  # type: ignore[union-attr]
            for p in parts
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    messages = rendered(args.messages)
    sender = Address.parse(SENDER, field="sender")
    date = format_date()
    timings: dict[str, list[float]] = {"mailer": [], "email": []}
    for _ in range(args.rounds):
        for label, build in (("mailer", with_mailer), ("email", with_email_message)):
            started = time.perf_counter()
            build(messages, sender, date)
            timings[label].append(time.perf_counter() - started)
    ours = with_mailer(messages[:50], sender, date)
    theirs = with_email_message(messages[:50], sender, date)
    agree = all(same_content(a, b) for a, b in zip(ours, theirs, strict=True))
    per_message = {
        k: statistics.median(v) / args.messages * 1e6 for k, v in timings.items()
    }
    ratios = [e / m for m, e in zip(timings["mailer"], timings["email"], strict=True)]
    print(f"{args.messages} messages (text + HTML), median of {args.rounds} rounds")
    print(f"  mailer builder               {per_message['mailer']:8.1f} us/message")
    print(f"  EmailMessage + as_bytes()    {per_message['email']:8.1f} us/message")
    ratio = statistics.median(ratios)
    mark = "MET" if ratio >= 5 else "NOT MET"
    print(f"  speed-up                     {ratio:8.1f}x  target >= 5x  {mark}")
    print(f"  same subject, To and bodies when parsed back (50 checked): {agree}")


if __name__ == "__main__":
    main()
