"""A message with a big attachment gives a page of a few hundred KB, not its size.

Found by attacking the web inbox: a message with a 22 MB attachment (30 MB on
the wire) rendered a 30 MB page, the whole base64 source in the Source tab.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from mailer.content.message import Envelope
from mailer.inbox.app import create_app
from mailer.inbox.store import MailStore
from mailer.records import SentMail

BASE = "http://127.0.0.1:8025"


@pytest.fixture
async def store(tmp_path: Path) -> MailStore:
    """An empty store in a temporary folder."""
    store = MailStore(tmp_path / "box")
    store.load()
    return store


@pytest.fixture
async def client(store: MailStore) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the inbox application (in-process ASGI)."""
    app = create_app(store, watch_templates=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def test_the_page_of_a_big_message_shows_the_start_of_its_source(
    store: MailStore, client: httpx.AsyncClient
) -> None:
    """5 MB attached: the page stays small, says so, and the .eml is whole."""
    message = EmailMessage()
    message["From"] = "shop@example.test"
    message["To"] = "ann@example.test"
    message["Subject"] = "big"
    message.set_content("see the file")
    data = os.urandom(5_000_000)
    message.add_attachment(
        data, maintype="application", subtype="octet-stream", filename="big.bin"
    )
    raw = message.as_bytes()
    stored = await store.add(
        SentMail(Envelope("shop@example.test", ("ann@example.test",)), raw)
    )
    page = await client.get(f"/messages/{stored.id}")
    assert page.status_code == 200
    assert len(page.content) < 400_000
    assert 'id="source-cut"' in page.text
    whole = await client.get(f"/api/v1/messages/{stored.id}/raw")
    assert whole.content == raw
    part = await client.get(f"/api/v1/messages/{stored.id}/parts/1")
    assert part.content == data
