"""InboxClient reads every message once, even when mail arrives while it pages.

Found by attacking the test kit: the client pages the API by offset (newest
first); a message arriving between two pages shifts the older ones, so one of
them came back twice, and an Outbox assertion counted a message twice.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from mailer.testing import InboxClient, Mail
from mailer.testing import inbox as inbox_client

InboxStarter = Callable[..., Any]


def deliver(port: int, subject: str) -> None:
    """Send one message with the standard library (blocking)."""
    message = EmailMessage()
    message["From"] = "shop@example.test"
    message["To"] = "ann@example.test"
    message["Subject"] = subject
    message.set_content("text")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.send_message(message)


def count(url: str) -> int:
    """How many messages the inbox holds (blocking)."""
    with urllib.request.urlopen(url + "/api/v1/messages", timeout=30) as answer:  # noqa: S310
        total: int = json.loads(answer.read())["total"]
        return total


async def test_mail_arriving_between_pages_is_read_once(
    inbox_process: InboxStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 2, a new message after the first page: every message once."""
    monkeypatch.setattr(inbox_client, "PAGE", 2)
    async with inbox_process(web=True) as inbox:
        for n in range(5):
            await asyncio.to_thread(deliver, inbox.smtp_port, f"old {n}")
        client = InboxClient(inbox.url)
        real = client._json
        pages = 0

        def page_then_mail(method: str, path: str) -> dict[str, Any]:
            nonlocal pages
            answer = real(method, path)
            if path.startswith("/api/v1/messages?"):
                pages += 1
                if pages == 1:  # a message arrives while the client pages
                    deliver(inbox.smtp_port, "new")
                    deadline = time.monotonic() + 30
                    while count(inbox.url) < 6:
                        assert time.monotonic() < deadline
                        time.sleep(0.05)
            return answer

        monkeypatch.setattr(client, "_json", page_then_mail)
        mails = await client.messages()
        subjects = [m.subject for m in mails]
        assert len(subjects) == len(set(subjects)), subjects
        assert {f"old {n}" for n in range(5)} <= set(subjects)
        outbox = await client.outbox()
        outbox.assert_sent(Mail(subject="old 0"), count=1)
