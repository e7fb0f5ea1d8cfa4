"""Hostile messages in the dev inbox: each is kept and shown, never refused or a 500.

The inbox shows hostile content by design, so a message the standard library
chokes on must still be listed, with its source. Found by attacking a running
`mailer inbox` (a separate process, over real SMTP and HTTP on loopback):

- MIME nested 1,500 deep: RecursionError, answered 451 for ever, never stored;
- header values that crash the standard library's header parser
  (``Cc: "``, ``Reply-To: .<``...): the message page and the API answered 500,
  and one of them (Cc) was refused with 451 for ever;
- MAIL FROM with 8-bit bytes and no SMTPUTF8: 451 for ever;
- an attached message (message/rfc822): listed as its inner parts, and not
  downloadable whole.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import aiosmtplib
import pytest

from mailer import Attachment, Message
from mailer.content.addresses import Address
from mailer.content.serialize import serialize_message

InboxStarter = Callable[..., Any]


def nested(depth: int) -> bytes:
    """A message whose MIME tree is ``depth`` multiparts deep."""
    head = (
        b"From: dev@example.test\r\nTo: you@example.test\r\n"
        b"Subject: nested deep\r\nMIME-Version: 1.0\r\n"
    )
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
        for n in range(depth)
    )
    inner = b"Content-Type: text/plain\r\n\r\nthe bottom\r\n"
    closing = b"".join(b"\r\n--b%d--\r\n" % n for n in reversed(range(depth)))
    return head + opening + inner + closing


def with_header(name: str, value: str, subject: str) -> bytes:
    """A small message with one extra (hostile) header."""
    return (
        f"From: dev@example.test\r\nTo: you@example.test\r\nSubject: {subject}\r\n"
        f"{name}: {value}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain\r\n\r\nbody text\r\n"
    ).encode("utf-8", "surrogateescape")


async def send_raw(
    port: int, raw: bytes, mail_from: str = "dev@example.test"
) -> tuple[int, str]:
    """Send bytes as they are; return the reply to the final dot."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
    await client.connect()
    try:
        await client.sendmail(mail_from, ["you@example.test"], raw)
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()
    return 250, "ok"


async def get(url: str) -> tuple[int, bytes]:
    """GET a URL of the inbox (in a thread); return the status and body."""

    def fetch() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return await asyncio.to_thread(fetch)


async def listed(base: str) -> list[dict[str, Any]]:
    """The inbox's messages, newest first, from its API."""
    status, body = await get(base + "/api/v1/messages")
    assert status == 200
    messages: list[dict[str, Any]] = json.loads(body)["messages"]
    return messages


async def test_a_message_nested_too_deeply_is_kept_and_shown(
    inbox_process: InboxStarter,
) -> None:
    """MIME 1,500 deep: accepted (250), listed, its page says why and shows the source."""
    raw = nested(1500)
    async with inbox_process(web=True) as inbox:
        code, text = await send_raw(inbox.smtp_port, raw)
        assert code == 250, text
        [summary] = await listed(inbox.url)
        assert summary["subject"] == "nested deep"
        assert "nested too deeply" in summary["snippet"]
        status, body = await get(f"{inbox.url}/api/v1/messages/{summary['id']}")
        assert status == 200
        assert "nested too deeply" in json.loads(body)["problem"]
        status, page = await get(f"{inbox.url}/messages/{summary['id']}")
        assert status == 200
        assert b"nested too deeply" in page
        status, _ = await get(f"{inbox.url}/messages/{summary['id']}/body")
        assert status == 200
        status, source = await get(f"{inbox.url}/api/v1/messages/{summary['id']}/raw")
        assert (status, source) == (200, raw)


HOSTILE_HEADERS = [
    ("Cc", '"'),
    ("Cc", "\udcff@"),
    ("Reply-To", ".<"),
    ("To", "=?utf-8?b?*?=,.'é =?utf-8?b??=)"),
    ("Message-ID", '<(\\éé>*=?utf-8?q?.@"'),
    ("Content-Type", 'text/plain; charset="no-such-charset"'),
]


async def test_header_values_that_crash_the_parser_never_hide_a_message(
    inbox_process: InboxStarter,
) -> None:
    """Each is accepted, listed, and its page and API detail answer 200."""
    async with inbox_process(web=True) as inbox:
        for number, (name, value) in enumerate(HOSTILE_HEADERS):
            raw = with_header(name, value, f"hostile {number}")
            code, text = await send_raw(inbox.smtp_port, raw)
            assert code == 250, (name, value, text)
        summaries = await listed(inbox.url)
        assert sorted(s["subject"] for s in summaries) == [
            f"hostile {n}" for n in range(len(HOSTILE_HEADERS))
        ]
        for summary in summaries:
            status, body = await get(f"{inbox.url}/api/v1/messages/{summary['id']}")
            assert status == 200, (summary["subject"], body[-300:])
            detail = json.loads(body)
            assert ["Subject", summary["subject"]] in detail["headers"]
            assert detail["text"] is not None
            assert "body text" in detail["text"]
            status, _ = await get(f"{inbox.url}/messages/{summary['id']}")
            assert status == 200, summary["subject"]


async def test_an_8bit_envelope_without_smtputf8_is_kept(
    inbox_process: InboxStarter,
) -> None:
    """MAIL FROM with raw 8-bit bytes (no SMTPUTF8): kept and shown, not 451 for ever."""
    async with inbox_process(web=True) as inbox:
        reader, writer = await asyncio.open_connection("127.0.0.1", inbox.smtp_port)
        replies = [await reader.readline()]

        async def say(line: bytes) -> bytes:
            writer.write(line)
            await writer.drain()
            reply = await reader.readline()
            while reply[3:4] == b"-":
                reply = await reader.readline()
            return reply

        replies.append(await say(b"EHLO client.example.test\r\n"))
        replies.append(await say(b"MAIL FROM:<\xff\xfedev@example.test>\r\n"))
        replies.append(await say(b"RCPT TO:<you@example.test>\r\n"))
        replies.append(await say(b"DATA\r\n"))
        final = await say(with_header("X-Eight", "bit", "eight-bit sender") + b".\r\n")
        writer.close()
        assert final.startswith(b"250"), (replies, final)
        [summary] = await listed(inbox.url)
        assert summary["mail_from"].endswith("dev@example.test")
        status, _ = await get(f"{inbox.url}/messages/{summary['id']}")
        assert status == 200


FORWARDED = (
    b"From: Ann <ann@example.test>\r\nTo: bob@example.test\r\n"
    b"Subject: the original\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="inner"\r\n\r\n'
    b"--inner\r\nContent-Type: text/plain\r\n\r\noriginal text\r\n"
    b"--inner\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename=inner.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--inner--\r\n"
)


@pytest.mark.parametrize("content_type", ["message/rfc822", None])
async def test_an_attached_message_is_one_part_downloaded_whole(
    inbox_process: InboxStarter, content_type: str | None
) -> None:
    """A forwarded .eml (as a message or a file): one attachment, its exact bytes."""
    message = Message(
        to="you@example.test",
        subject="forwarding",
        body="see attached",
        attachments=[
            Attachment(FORWARDED, filename="original.eml", content_type=content_type)
        ],
    )
    sender = Address.parse("dev@example.test", field="from")
    raw = serialize_message(message, sender).content
    async with inbox_process(web=True) as inbox:
        code, text = await send_raw(inbox.smtp_port, raw)
        assert code == 250, text
        [summary] = await listed(inbox.url)
        assert summary["has_attachments"]
        status, body = await get(f"{inbox.url}/api/v1/messages/{summary['id']}")
        parts = json.loads(body)["attachments"]
        assert [p["filename"] for p in parts] == ["original.eml"]
        status, data = await get(
            f"{inbox.url}/api/v1/messages/{summary['id']}/parts/{parts[0]['index']}"
        )
        assert (status, data) == (200, FORWARDED)
