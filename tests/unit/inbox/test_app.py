"""The web inbox application called in-process (httpx's ASGI transport: no sockets)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mailer.cli.app import app as cli
from mailer.content.message import Envelope
from mailer.inbox.app import create_app
from mailer.inbox.store import MailStore
from mailer.inbox.summary import StoredMail
from mailer.records import SentMail, SessionInfo

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "templates"
BASE = "http://127.0.0.1:8025"


@pytest.fixture
async def store(tmp_path: Path) -> MailStore:
    """An empty store in a temporary folder."""
    store = MailStore(tmp_path / "box")
    store.load()
    return store


@pytest.fixture
async def client(store: MailStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the whole application (inbox and previews)."""
    templates = tmp_path / "templates"
    shutil.copytree(EXAMPLES, templates)
    app = create_app(store, templates_dir=templates, watch_templates=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def add(store: MailStore, subject: str, *, html: str | None = None) -> StoredMail:
    message = EmailMessage()
    message["From"] = "Shop <shop@example.test>"
    message["To"] = "Ann <ann@example.test>"
    message["Subject"] = subject
    message.set_content("Body <text> & more")
    if html is not None:
        message.add_alternative(html, subtype="html")
    message.add_attachment(
        b"<html><script>x()</script>",
        maintype="text",
        subtype="html",
        filename="page.html",
    )
    return await store.add(
        SentMail(
            envelope=Envelope(
                mail_from="shop@example.test",
                rcpt_tos=("ann@example.test", "audit@example.test"),
            ),
            raw=message.as_bytes(),
            session=SessionInfo(1, ("127.0.0.1", 1), "app", "tls", "TLSv1.3", "svc"),
        )
    )


async def test_the_list_escapes_what_a_message_says(
    client: httpx.AsyncClient, store: MailStore
) -> None:
    """A subject with markup is shown as text in the list."""
    await add(store, "<img src=x onerror=alert(1)> Hi")
    page = await client.get("/")
    assert page.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt; Hi" in page.text
    assert "<img src=x" not in page.text
    assert "1 unread" in page.text.replace("</span>", "").replace(
        '<span id="unread">', ""
    )


async def test_the_message_page_names_bcc_tls_and_the_auth_user(
    client: httpx.AsyncClient, store: MailStore
) -> None:
    """Envelope and session facts are on the page; the text body is escaped."""
    stored = await add(store, "Facts")
    page = await client.get(f"/messages/{stored.id}")
    assert page.status_code == 200
    assert "audit@example.test" in page.text
    assert '<span class="tag">Bcc</span>' in page.text
    assert "implicit TLS, TLSv1.3" in page.text
    assert "svc" in page.text
    assert "Body &lt;text&gt; &amp; more" in page.text


async def test_an_attachment_is_served_as_a_download_that_cannot_run(
    client: httpx.AsyncClient, store: MailStore
) -> None:
    """An HTML attachment downloads; it is never served as a page of the inbox."""
    stored = await add(store, "Attachment")
    detail = (await client.get(f"/api/v1/messages/{stored.id}")).json()
    [part] = detail["attachments"]
    answer = await client.get(f"/api/v1/messages/{stored.id}/parts/{part['index']}")
    assert answer.content == b"<html><script>x()</script>"
    assert answer.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_unknown_ids_bad_parameters_and_bad_patches_get_clear_errors(
    client: httpx.AsyncClient, store: MailStore
) -> None:
    """404 for an unknown message, 400 for a bad limit or flag, 415 without JSON."""
    stored = await add(store, "Errors")
    missing = await client.get("/api/v1/messages/nope")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "no message 'nope'"},
    )
    assert (await client.get("/api/v1/messages?limit=-1")).status_code == 400
    assert (await client.get("/api/v1/messages?offset=x")).status_code == 400
    url = f"/api/v1/messages/{stored.id}"
    assert (await client.patch(url, content=b'{"read": true}')).status_code == 415
    bad = await client.patch(url, json={"subject": "changed"})
    assert bad.status_code == 400
    assert (await client.patch(url, json={"read": "yes"})).status_code == 400
    assert (await client.patch(url, json={"read": True})).json()["read"] is True
    page = await client.get("/messages/nope")
    assert page.status_code == 404
    assert "No such message" in page.text


async def test_a_foreign_host_is_refused_before_any_route(
    client: httpx.AsyncClient, store: MailStore
) -> None:
    """Host evil.example: 421, whatever the path."""
    await add(store, "Secret")
    for path in ("/", "/api/v1/messages", "/static/inbox.js", "/nope"):
        answer = await client.get(path, headers={"Host": "evil.example"})
        assert answer.status_code == 421
        assert "Secret" not in answer.text


async def test_the_preview_pages_show_a_set_and_an_error_page_is_never_blank(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The Templates tab lists sets; a set renders; a broken one shows its problem."""
    listing = await client.get("/templates")
    assert 'href="/templates/welcome"' in listing.text
    page = await client.get("/templates/welcome")
    assert "Welcome to Example Shop, Ann Example!" in page.text
    frame = await client.get("/templates/welcome/body?sample=1")
    assert "Zoë Ünïcode" in frame.text
    assert "sandbox" in frame.headers["content-security-policy"]
    (tmp_path / "templates" / "welcome" / "subject.txt").write_text("{{ oops.x }}\n")
    broken = await client.get("/templates/welcome")
    assert broken.status_code == 200
    assert "Cannot render welcome" in broken.text
    assert "oops" in broken.text
    assert (await client.get("/templates/none")).status_code == 404


async def test_previews_alone_have_no_inbox(tmp_path: Path) -> None:
    """create_app(None): / goes to the templates; the messages API says there is none."""
    app = create_app(None, templates_dir=EXAMPLES, watch_templates=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE
    ) as client:
        home = await client.get("/")
        assert (home.status_code, home.headers["location"]) == (303, "/templates")
        assert (await client.get("/api/v1/messages")).status_code == 404


def test_the_inbox_command_checks_its_numbers_in_one_line(tmp_path: Path) -> None:
    """--max-messages 0 and --max-connections 0: one line, exit 2, nothing started."""
    runner = CliRunner()
    for option in ("--max-messages", "--max-connections"):
        result = runner.invoke(cli, ["inbox", option, "0", "--dir", str(tmp_path)])
        assert result.exit_code == 2
        assert f"{option}: " in result.output
        assert "Traceback" not in result.output


def test_preview_without_a_template_says_what_to_give() -> None:
    """`mailer preview` alone: one line naming --template, --recipients and --serve."""
    result = CliRunner().invoke(cli, ["preview"])
    assert result.exit_code == 2
    assert "--template and --recipients (or --serve" in result.output
