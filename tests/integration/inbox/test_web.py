"""The web inbox over real sockets: the JSON API, its guards, events, storage, the client."""

from __future__ import annotations

import asyncio
import json
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from mailer import Message, MessageClient
from mailer.config.settings import MailerSettings
from mailer.inbox.service import DevInbox, open_dev_inbox
from mailer.testing import Addr, Contains, InboxClient, Mail


def mail(
    subject: str, text: str = "Plain text.", to: str = "ann@example.test"
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Shop <shop@example.test>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    return message


async def deliver(inbox: DevInbox, message: EmailMessage, *bcc: str) -> None:
    await aiosmtplib.send(
        message,
        hostname="127.0.0.1",
        port=inbox.smtp.port,
        recipients=[str(message["To"]), *bcc],
        timeout=30,
    )


async def http(
    inbox: DevInbox,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Make one HTTP request with exactly these headers (Host included)."""
    assert inbox.web is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", inbox.web.port)
    lines = [f"{method} {path} HTTP/1.1"]
    fields = {"Host": f"127.0.0.1:{inbox.web.port}", "Connection": "close"}
    fields.update(headers or {})
    if body is not None:
        fields["Content-Length"] = str(len(body))
    lines += [f"{name}: {value}" for name, value in fields.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
    answer = await asyncio.wait_for(reader.read(), timeout=30)
    writer.close()
    await writer.wait_closed()
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), found, content


async def get_json(inbox: DevInbox, path: str) -> dict:  # type: ignore[type-arg]
    status, _, content = await http(inbox, "GET", path)
    assert status == 200, content
    return json.loads(content)  # type: ignore[no-any-return]


async def test_the_api_lists_and_shows_a_message_with_envelope_and_session(
    dev_inbox: DevInbox,
) -> None:
    """List and detail carry the envelope, the Bcc by name and the session facts."""
    await deliver(dev_inbox, mail("Invoice 42", "Total: 12 EUR"), "audit@example.test")
    listing = await get_json(dev_inbox, "/api/v1/messages")
    assert (listing["total"], listing["unread"]) == (1, 1)
    [summary] = listing["messages"]
    assert summary["subject"] == "Invoice 42"
    assert summary["bcc"] == ["audit@example.test"]
    detail = await get_json(dev_inbox, f"/api/v1/messages/{summary['id']}")
    assert detail["envelope"] == {
        "mail_from": "shop@example.test",
        "rcpt_tos": ["ann@example.test", "audit@example.test"],
        "bcc": ["audit@example.test"],
    }
    assert detail["session"]["tls"] == "none"
    assert detail["session"]["peer"][0] == "127.0.0.1"
    assert detail["text"] == "Total: 12 EUR\n"
    assert detail["checks"]["has_text"] is True
    assert ["Subject", "Invoice 42"] in detail["headers"]
    latest = await get_json(dev_inbox, "/api/v1/messages/latest")
    assert latest["id"] == summary["id"]


async def test_raw_parts_flags_and_deletes_through_the_api(dev_inbox: DevInbox) -> None:
    """Raw bytes are exact; a part downloads; PATCH marks read; DELETE one and all work."""
    message = mail("With file")
    message.add_attachment(
        b"col\n1\n", maintype="text", subtype="csv", filename="r.csv"
    )
    await deliver(dev_inbox, message)
    await deliver(dev_inbox, mail("Second"))
    [second, first] = (await get_json(dev_inbox, "/api/v1/messages"))["messages"]
    status, headers, raw = await http(
        dev_inbox, "GET", f"/api/v1/messages/{first['id']}/raw"
    )
    assert status == 200
    assert raw == dev_inbox.store.path(first["id"]).read_bytes()
    assert b"Subject: With file" in raw
    detail = await get_json(dev_inbox, f"/api/v1/messages/{first['id']}")
    [part] = detail["attachments"]
    status, headers, content = await http(
        dev_inbox, "GET", f"/api/v1/messages/{first['id']}/parts/{part['index']}"
    )
    assert (status, content) == (200, b"col\n1\n")
    assert headers["content-disposition"].startswith('attachment; filename="r.csv"')
    status, _, _ = await http(
        dev_inbox,
        "PATCH",
        f"/api/v1/messages/{first['id']}",
        headers={"Content-Type": "application/json"},
        body=b'{"read": true}',
    )
    assert status == 200
    assert (await get_json(dev_inbox, "/api/v1/messages?q=is:unread"))["total"] == 1
    status, _, _ = await http(dev_inbox, "DELETE", f"/api/v1/messages/{second['id']}")
    assert status == 200
    assert (await get_json(dev_inbox, "/api/v1/messages"))["total"] == 1
    status, _, content = await http(dev_inbox, "DELETE", "/api/v1/messages")
    assert json.loads(content) == {"deleted": 1}
    assert list(dev_inbox.store.directory.glob("*.eml")) == []


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8025", "127.0.0.1.nip.io", "[::2]:8025", ""]
)
async def test_a_host_that_is_not_loopback_is_refused(
    dev_inbox: DevInbox, host: str
) -> None:
    """DNS-rebinding defence: any Host but a loopback name gets 421 and no data."""
    await deliver(dev_inbox, mail("Secret subject"))
    for path in ("/", "/api/v1/messages"):
        status, _, content = await http(dev_inbox, "GET", path, headers={"Host": host})
        assert status == 421
        assert b"Secret subject" not in content


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1", "[::1]:{port}"])
async def test_loopback_host_names_are_served(dev_inbox: DevInbox, host: str) -> None:
    """localhost, 127.0.0.1 and [::1] are all this machine."""
    assert dev_inbox.web is not None
    headers = {"Host": host.format(port=dev_inbox.web.port)}
    status, _, _ = await http(dev_inbox, "GET", "/api/v1/messages", headers=headers)
    assert status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_a_cross_site_delete_is_refused(
    dev_inbox: DevInbox, headers: dict[str, str]
) -> None:
    """DELETE from another origin (by Origin or Sec-Fetch-Site) gets 403; nothing goes."""
    await deliver(dev_inbox, mail("Keep"))
    status, _, _ = await http(dev_inbox, "DELETE", "/api/v1/messages", headers=headers)
    assert status == 403
    assert len(dev_inbox.store) == 1


async def test_there_is_no_cors(dev_inbox: DevInbox) -> None:
    """No Access-Control-Allow-* header, even to a preflight: no other site reads or writes."""
    preflight = {
        "Origin": "http://evil.example",
        "Access-Control-Request-Method": "DELETE",
    }
    status, headers, _ = await http(
        dev_inbox, "OPTIONS", "/api/v1/messages", headers=preflight
    )
    assert status >= 400
    assert not [h for h in headers if h.startswith("access-control-")]
    _, headers, _ = await http(
        dev_inbox, "GET", "/api/v1/messages", headers={"Origin": "http://evil.example"}
    )
    assert not [h for h in headers if h.startswith("access-control-")]


async def test_pages_and_message_html_carry_a_restrictive_policy(
    dev_inbox: DevInbox,
) -> None:
    """Pages allow only the inbox's own scripts; a message's HTML allows none, and no remote image."""
    html = mail("Policy")
    html.add_alternative("<p>hi</p>", subtype="html")
    await deliver(dev_inbox, html)
    [summary] = (await get_json(dev_inbox, "/api/v1/messages"))["messages"]
    _, headers, _ = await http(dev_inbox, "GET", "/")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    _, headers, _ = await http(dev_inbox, "GET", f"/messages/{summary['id']}/body")
    policy = headers["content-security-policy"]
    assert "sandbox" in policy
    assert "script-src" not in policy  # default-src 'none' covers it
    assert "default-src 'none'" in policy
    assert "https:" not in policy
    await dev_inbox.store.update(summary["id"], remote_images=True)
    _, headers, _ = await http(dev_inbox, "GET", f"/messages/{summary['id']}/body")
    assert "https:" in headers["content-security-policy"]


async def test_events_announce_a_new_message(dev_inbox: DevInbox) -> None:
    """The event stream says hello, then announces each message as it arrives."""
    assert dev_inbox.web is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", dev_inbox.web.port)
    writer.write(
        f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{dev_inbox.web.port}\r\n\r\n".encode()
    )
    try:
        received = b""
        async with asyncio.timeout(30):
            while b"event: hello" not in received:
                received += await reader.read(4096)
            await deliver(dev_inbox, mail("Live one"))
            while b"event: added" not in received:
                received += await reader.read(4096)
        assert b"text/event-stream" in received
        [summary] = dev_inbox.store.search()[0]
        assert f'"id": "{summary.id}"'.encode() in received
    finally:
        writer.close()
        await writer.wait_closed()


async def test_messages_and_flags_survive_a_restart(tmp_path: Path) -> None:
    """Stop the inbox, start another on the same folder: the same list, flags kept."""
    folder = tmp_path / "box"
    async with await open_dev_inbox(
        directory=folder, smtp_port=0, http_port=0
    ) as inbox:
        await deliver(inbox, mail("Before the restart"), "hidden@example.test")
        [stored] = inbox.store.search()[0]
        await inbox.store.update(stored.id, read=True)
    async with await open_dev_inbox(
        directory=folder, smtp_port=0, http_port=0
    ) as again:
        [summary] = (await get_json(again, "/api/v1/messages"))["messages"]
        assert summary["subject"] == "Before the restart"
        assert summary["read"] is True
        assert summary["bcc"] == ["hidden@example.test"]
        await deliver(again, mail("After"))
        assert [m.subject for m in again.store.search()[0]] == [
            "After",
            "Before the restart",
        ]


async def test_max_messages_drops_the_oldest(tmp_path: Path) -> None:
    """With a cap of 3, five messages leave the three newest, files included."""
    folder = tmp_path / "box"
    async with await open_dev_inbox(
        directory=folder, smtp_port=0, http_port=None, max_messages=3
    ) as inbox:
        for number in range(5):
            await deliver(inbox, mail(f"n{number}"))
        assert [m.subject for m in inbox.store.search()[0]] == ["n4", "n3", "n2"]
        assert len(list(folder.glob("*.eml"))) == 3
        assert len(list((folder / ".index").glob("*.json"))) == 3


async def test_the_testing_client_gives_sent_mail_for_outbox_assertions(
    dev_inbox: DevInbox,
) -> None:
    """InboxClient returns SentMail records: matchers, Bcc and session work as elsewhere."""
    assert dev_inbox.web is not None
    client = InboxClient(dev_inbox.web.url)
    settings = MailerSettings(
        _env_file=None,
        smtp_host="127.0.0.1",
        smtp_port=dev_inbox.smtp.port,
        smtp_tls="none",
        from_="Shop <shop@example.test>",
    )
    async with MessageClient(settings) as sender:
        await sender.send(
            Message(
                to="Bob <bob@example.test>",
                bcc="audit@example.test",
                subject="Reset your password",
                body="Your code is 123456.",
            )
        )
    [found] = await client.wait_for(
        to=Addr("bob@example.test"), subject=Contains("Reset")
    )
    assert found.extract(r"code is (\d{6})") == "123456"
    outbox = await client.outbox()
    outbox.assert_sent(
        Mail(bcc=["audit@example.test"], tls="none", subject=Contains("Reset"))
    )
    assert found.session is not None
    assert found.session.auth_username is None
    with pytest.raises(AssertionError, match="Nearest miss"):
        await client.wait_for(subject="Never sent", timeout=0.3)
    assert await client.clear() == 1
    assert await asyncio.to_thread(client.outbox_blocking) == []
