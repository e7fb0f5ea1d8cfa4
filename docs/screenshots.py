"""Take the README's screenshots of the web inbox: the list, a message, a preview.

Starts a dev inbox on free ports in a temporary folder, sends the example
template to the example recipients over SMTP (plus one message with an
attachment), and photographs the pages in Debian's Chromium.

    .venv/bin/python docs/screenshots.py      # writes docs/inbox-*.png
"""

from __future__ import annotations

import asyncio
import tempfile
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
from playwright.async_api import async_playwright

from mailer.bulk.recipients import RecipientFile
from mailer.bulk.sending import send_messages
from mailer.config.settings import MailerSettings
from mailer.inbox.service import open_dev_inbox

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def main() -> None:
    """Fill an inbox and photograph its pages."""
    with tempfile.TemporaryDirectory() as scratch:
        async with await open_dev_inbox(
            directory=Path(scratch),
            smtp_port=0,
            http_port=0,
            templates_dir=EXAMPLES / "templates",
        ) as inbox:
            if inbox.web is None:
                raise SystemExit("the web page did not start")
            invoice = EmailMessage()
            invoice["From"] = "Example Shop <shop@example.test>"
            invoice["To"] = "Bob <bob@example.test>"
            invoice["Subject"] = "Your invoice INV-2041"
            invoice.set_content("Your invoice is attached. Total: 42.00 EUR.")
            invoice.add_attachment(
                b"%PDF-1.4\n",
                maintype="application",
                subtype="pdf",
                filename="INV-2041.pdf",
            )
            await aiosmtplib.send(
                invoice,
                hostname="127.0.0.1",
                port=inbox.smtp.port,
                recipients=["bob@example.test", "audit@example.test"],
            )
            settings = MailerSettings(
                _env_file=None,
                smtp_host="127.0.0.1",
                smtp_port=inbox.smtp.port,
                smtp_tls="none",
                from_="Example Shop <shop@example.test>",
                templates_dir=EXAMPLES / "templates",
            )
            await send_messages(
                "welcome", RecipientFile(EXAMPLES / "recipients.csv"), settings=settings
            )
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=FLAGS
                )
                page = await browser.new_page(viewport={"width": 1200, "height": 560})
                await page.goto(inbox.web.url + "/")
                await page.screenshot(path=HERE / "inbox-list.png")
                await page.click("text=Welcome to Example Shop, Ann Example!")
                await page.wait_for_timeout(500)
                await page.screenshot(path=HERE / "inbox-message.png")
                await page.set_viewport_size({"width": 1200, "height": 760})
                await page.goto(inbox.web.url + "/templates/welcome")
                await page.wait_for_timeout(500)
                await page.screenshot(path=HERE / "inbox-preview.png")
                await browser.close()
    print("wrote", ", ".join(p.name for p in sorted(HERE.glob("inbox-*.png"))))


if __name__ == "__main__":
    asyncio.run(main())
