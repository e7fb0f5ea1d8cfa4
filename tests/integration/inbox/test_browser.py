"""The web inbox in a real browser: Debian's Chromium driven by Playwright.

Mail goes in over real SMTP; every assertion is about what the page shows or
does. These are the acceptance tests of the web inbox (issue 16).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
from playwright.async_api import Page, expect

from mailer.inbox.service import DevInbox

TIMEOUT_MS = 20_000


def png(width: int = 3, height: int = 2) -> bytes:
    """A real PNG image (red pixels), made here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def mail(
    subject: str,
    text: str = "Plain text.",
    html: str | None = None,
    *,
    to: str = "ann@example.test",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Shop <shop@example.test>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


async def deliver(inbox: DevInbox, message: EmailMessage, *extra: str) -> None:
    """Send over SMTP to the inbox (extra addresses: envelope only, as Bcc)."""
    recipients = [str(message["To"]), *extra]
    await aiosmtplib.send(
        message,
        hostname="127.0.0.1",
        port=inbox.smtp.port,
        recipients=recipients,
        timeout=30,
    )


def url(inbox: DevInbox, path: str = "/") -> str:
    assert inbox.web is not None
    return inbox.web.url + path


async def open_live(page: Page, address: str) -> None:
    """Open a page and wait until its event stream is connected."""
    await page.goto(address)
    await expect(page.locator("body[data-live='1']")).to_have_count(
        1, timeout=TIMEOUT_MS
    )


async def test_new_mail_appears_in_the_open_list_without_a_reload(
    dev_inbox: DevInbox, page: Page
) -> None:
    """A message sent over SMTP shows up in the list that is already open."""
    await open_live(page, url(dev_inbox))
    await page.evaluate("window.notReloaded = true")
    await deliver(dev_inbox, mail("Your order has shipped"))
    row = page.locator("tr.row", has_text="Your order has shipped")
    await expect(row).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(row).to_have_class("row unread")
    assert await page.evaluate("window.notReloaded") is True
    await expect(page.locator("#count")).to_have_text("1")


async def test_a_message_html_renders_in_its_frame(
    dev_inbox: DevInbox, page: Page
) -> None:
    """The HTML part is rendered (in a sandboxed frame) and opening it marks it read."""
    html = "<h1 id='greeting'>Welcome, Ann</h1><p>Your <b>Pro</b> plan is active.</p>"
    await deliver(dev_inbox, mail("Welcome", html=html))
    await page.goto(url(dev_inbox))
    await page.click("text=Welcome")
    frame = page.frame_locator("iframe#body")
    await expect(frame.locator("#greeting")).to_have_text(
        "Welcome, Ann", timeout=TIMEOUT_MS
    )
    await expect(page.locator("body[data-read='1']")).to_have_count(1)
    [stored] = dev_inbox.store.search()[0]
    assert stored.read


async def test_a_hostile_message_runs_no_script(
    dev_inbox: DevInbox, page: Page
) -> None:
    """Neither a <script> nor an onerror= handler in a message runs, and nothing leaks out."""
    hostile = (
        "<p id='visible'>Hostile &lt;mail&gt;</p>"
        "<script>document.body.dataset.script = 'ran';"
        "fetch('/api/v1/messages', {method: 'DELETE'});"
        "parent.document.title = 'pwned';</script>"
        "<img id='bad' src='/nowhere.png' onerror=\"document.body.dataset.onerror = 'ran';"
        "fetch('/api/v1/messages?onerror=ran')\">"
    )
    await deliver(dev_inbox, mail("<script>alert(1)</script> invoice", html=hostile))
    requests: list[str] = []
    console: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: console.append(message.text))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(url(dev_inbox))
    # The subject is shown as text, never as markup.
    await expect(page.locator("td.subject a")).to_have_text(
        "<script>alert(1)</script> invoice"
    )
    await page.click("td.subject a")
    frame_element = page.locator("iframe#body")
    await expect(page.frame_locator("iframe#body").locator("#visible")).to_have_text(
        "Hostile <mail>", timeout=TIMEOUT_MS
    )
    frame = await (await frame_element.element_handle()).content_frame()  # type: ignore[union-attr]
    assert frame is not None
    await expect(frame.locator("#bad")).to_have_count(1)
    flags = await frame.evaluate(
        "[document.body.dataset.script, document.body.dataset.onerror]"
    )
    assert flags == [None, None]
    assert "pwned" not in await page.title()
    assert dialogs == []
    assert not [u for u in requests if "onerror=ran" in u]
    assert any("allow-scripts" in line for line in console), console
    assert len(dev_inbox.store) == 1  # the script's DELETE never ran


async def test_an_inline_image_displays_through_its_content_id(
    dev_inbox: DevInbox, page: Page
) -> None:
    """An image sent as a related part shows in the HTML through cid:."""
    message = mail(
        "With a logo", html="<p><img id='logo' src='cid:logo@shop' alt='Logo'></p>"
    )
    html_part = message.get_payload()[1]  # type: ignore[index]
    html_part.add_related(png(3, 2), maintype="image", subtype="png", cid="<logo@shop>")
    await deliver(dev_inbox, message)
    await page.goto(url(dev_inbox))
    await page.click("text=With a logo")
    logo = page.frame_locator("iframe#body").locator("#logo")
    await expect(logo).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(logo).to_have_js_property("complete", True)
    assert await logo.evaluate("image => image.naturalWidth") == 3


async def test_an_attachment_downloads_with_its_exact_bytes(
    dev_inbox: DevInbox, page: Page, tmp_path: Path
) -> None:
    """The Attachments tab offers the file, and the download is byte for byte."""
    content = bytes(range(256)) * 40
    message = mail("Your invoice")
    message.add_attachment(
        content, maintype="application", subtype="pdf", filename="invoice-42.pdf"
    )
    await deliver(dev_inbox, message)
    await page.goto(url(dev_inbox))
    await expect(page.locator("tr.row .attachment")).to_have_count(1)  # the mark
    await page.click("text=Your invoice")
    await page.click("button[data-tab='attachments']")
    async with page.expect_download(timeout=TIMEOUT_MS) as info:
        await page.click("a.download")
    download = await info.value
    assert download.suggested_filename == "invoice-42.pdf"
    saved = tmp_path / "downloaded.pdf"
    await download.save_as(saved)
    assert saved.read_bytes() == content


async def test_search_finds_a_message_by_a_word_of_its_text(
    dev_inbox: DevInbox, page: Page
) -> None:
    """Searching for a word of one message's text lists that message alone."""
    await deliver(dev_inbox, mail("Receipt", text="You bought a pineapple."))
    await deliver(dev_inbox, mail("Newsletter", text="Our autumn collection."))
    await page.goto(url(dev_inbox))
    await expect(page.locator("tr.row")).to_have_count(2)
    await page.fill("input[name='q']", "pineapple")
    await page.press("input[name='q']", "Enter")
    await expect(page.locator("tr.row")).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(page.locator("tr.row")).to_contain_text("Receipt")


async def test_delete_removes_the_message(dev_inbox: DevInbox, page: Page) -> None:
    """Delete on the message page removes it from the page and the folder."""
    await deliver(dev_inbox, mail("Delete me"))
    await deliver(dev_inbox, mail("Keep me"))
    await page.goto(url(dev_inbox))
    await page.click("text=Delete me")
    await page.click("button#delete")
    await page.wait_for_url(url(dev_inbox), timeout=TIMEOUT_MS)
    await expect(page.locator("tr.row")).to_have_count(1)
    await expect(page.locator("tr.row")).to_contain_text("Keep me")
    assert [m.subject for m in dev_inbox.store.search()[0]] == ["Keep me"]
    assert len(list(dev_inbox.store.directory.glob("*.eml"))) == 1


async def test_delete_all_empties_the_list(dev_inbox: DevInbox, page: Page) -> None:
    """Delete all (confirmed) removes every message from the open list."""
    for number in range(3):
        await deliver(dev_inbox, mail(f"Bulk {number}"))
    await open_live(page, url(dev_inbox))
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#delete-all")
    await expect(page.locator("tr.row")).to_have_count(0, timeout=TIMEOUT_MS)
    assert len(dev_inbox.store) == 0


async def test_a_preview_updates_after_a_template_file_is_edited(
    dev_inbox: DevInbox, page: Page, templates_dir: Path
) -> None:
    """The open preview of `welcome` shows the new text once body.txt changes on disk."""
    await open_live(page, url(dev_inbox, "/templates/welcome"))
    await expect(page.locator("#preview-subject")).to_have_text(
        "Welcome to Example Shop, Ann Example!"
    )
    body = templates_dir / "welcome" / "body.txt"
    body.write_text("Fresh copy for {{ name }}: edited just now.\n", encoding="utf-8")
    await expect(page.locator("#preview-text")).to_contain_text(
        "Fresh copy for Ann Example: edited just now.", timeout=TIMEOUT_MS
    )


async def test_a_render_error_names_the_variable_file_and_line(
    dev_inbox: DevInbox, page: Page, templates_dir: Path
) -> None:
    """A template using an undefined variable shows it, with its file and line, not a blank page."""
    body = templates_dir / "welcome" / "body.html"
    lines = body.read_text(encoding="utf-8").splitlines()
    lines[3] = "<h1>Hello {{ nmae }},</h1>"
    body.write_text("\n".join(lines) + "\n", encoding="utf-8")
    await page.goto(url(dev_inbox, "/templates/welcome"))
    problem = page.locator("#problem")
    await expect(problem).to_contain_text("nmae")
    await expect(problem).to_contain_text("welcome/body.html line 4")
    await expect(page.locator("#preview-text")).to_contain_text("Hello Ann Example")


async def test_another_site_cannot_delete_mail(dev_inbox: DevInbox, page: Page) -> None:
    """A page on another origin cannot delete: its fetch is blocked and its form refused."""
    await deliver(dev_inbox, mail("Precious"))
    target = url(dev_inbox, "/api/v1/messages")
    evil = f"""<!doctype html><form id=f method=post action="{target}"></form>
    <script>
      fetch("{target}", {{method: "DELETE"}}).then(
        () => document.title = "fetch answered",
        () => document.title = "fetch blocked");
    </script>"""
    await page.route(
        "http://evil.example/**",
        lambda route: route.fulfill(body=evil, content_type="text/html"),
    )
    await page.goto("http://evil.example/")
    await expect(page).to_have_title("fetch blocked", timeout=TIMEOUT_MS)
    async with page.expect_navigation():
        await page.evaluate("document.getElementById('f').submit()")
    assert "refused" in await page.content()
    assert len(dev_inbox.store) == 1
