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
