"""Run `mailer inbox` as a user does: a separate process on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from mailer.inbox.service import DevInbox, open_dev_inbox

MAILER = [sys.executable, "-m", "mailer"]
BANNER = re.compile(r"listening on 127\.0\.0\.1:(\d+)(?: and (http://\S+?),)?")


def clean_env() -> dict[str, str]:
    """The environment without MAILER_* keys."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}


@dataclass
class InboxProcess:
    """A running `mailer inbox` process and where it listens."""

    process: asyncio.subprocess.Process
    smtp_port: int
    url: str | None
    directory: Path

    def rss_kib(self, field: str = "VmRSS") -> int:
        """Return a memory figure of the process from /proc (in KiB)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))


InboxStarter = Callable[..., "asyncio.AbstractAsyncContextManager[InboxProcess]"]


@pytest.fixture
def inbox_process(tmp_path: Path) -> InboxStarter:
    """Start `mailer inbox --port 0` with extra arguments (and limits set in the child)."""

    @asynccontextmanager
    async def start(
        *args: str,
        web: bool = False,
        preexec: Callable[[], None] | None = None,
        directory: Path | None = None,
    ) -> AsyncIterator[InboxProcess]:
        folder = directory or tmp_path / "box"
        command = [*MAILER, "inbox", "--port", "0", "--dir", str(folder), *args]
        command += ["--http-port", "0"] if web else ["--no-web"]
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,
            limit=1 << 20,
        )
        try:
            assert process.stdout is not None
            banner = (
                await asyncio.wait_for(process.stdout.readline(), timeout=60)
            ).decode()
            match = BANNER.search(banner)
            if match is None:
                assert process.stderr is not None
                error = await asyncio.wait_for(process.stderr.read(), timeout=30)
                raise AssertionError(f"no banner: {banner!r} {error!r}")
            yield InboxProcess(process, int(match.group(1)), match.group(2), folder)
        finally:
            if process.returncode is None:
                process.terminate()
            await asyncio.wait_for(process.wait(), timeout=30)

    return start


EXAMPLE_TEMPLATES = Path(__file__).resolve().parents[3] / "examples" / "templates"
# Flags that work on this kind of machine: no sandbox as root, and no
# background traffic to Google's hosts (the network is closed).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    """A copy of the example template sets, safe to edit."""
    import shutil

    folder = tmp_path / "templates"
    shutil.copytree(EXAMPLE_TEMPLATES, folder)
    return folder


@pytest.fixture
async def dev_inbox(tmp_path: Path, templates_dir: Path) -> AsyncIterator[DevInbox]:
    """The whole dev inbox (store, SMTP, web) in the test's loop, on free ports."""
    async with await open_dev_inbox(
        directory=tmp_path / "box",
        smtp_port=0,
        http_port=0,
        templates_dir=templates_dir,
    ) as inbox:
        yield inbox


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; a missing one fails (never skips) the browser tests."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get)")
    return CHROMIUM


@pytest.fixture
async def page(chromium: str) -> AsyncIterator[Page]:
    """A page of Debian's Chromium, driven by Playwright (never a downloaded browser)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_FLAGS
        )
        try:
            context = await browser.new_context(accept_downloads=True)
            yield await context.new_page()
            await context.close()
        finally:
            await browser.close()
