"""`mailer inbox` and `mailer preview --serve` as a user runs them: processes, sockets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
MAILER = [sys.executable, "-m", "mailer"]
InboxStarter = Callable[..., Any]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def readme_env_snippet() -> str:
    """The `.env` the README tells users to write for `mailer inbox`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    after = readme.split("<!-- inbox-env -->", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


async def test_the_readme_env_sends_to_the_inbox_and_the_page_lists_it(
    inbox_process: InboxStarter, tmp_path: Path
) -> None:
    """The README's .env (port aside) + `mailer send`: every example arrives, listed by the API."""
    async with inbox_process(web=True) as inbox:
        assert inbox.url is not None
        env_text = readme_env_snippet()
        assert "MAILER_SMTP_PORT=1025" in env_text
        assert "USERNAME" not in env_text
        project = tmp_path / "project"
        project.mkdir()
        (project / "examples").symlink_to(ROOT / "examples")
        (project / ".env").write_text(
            env_text.replace("1025", str(inbox.smtp_port)), encoding="utf-8"
        )
        sent = await asyncio.to_thread(
            subprocess.run,
            [
                *MAILER,
                "send",
                "--template",
                "welcome",
                "--recipients",
                "examples/recipients.csv",
            ],
            cwd=project,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        status, body = await asyncio.to_thread(fetch, inbox.url + "/api/v1/messages")
        assert status == 200
        listing = json.loads(body)
        assert listing["total"] == 4
        assert {m["rcpt_tos"][0] for m in listing["messages"]} >= {"ann@example.test"}
        status, page = await asyncio.to_thread(fetch, inbox.url + "/")
        assert status == 200
        assert b"Welcome to Example Shop" in page
        inbox.process.terminate()
        out, _ = await asyncio.wait_for(inbox.process.communicate(), timeout=30)
        assert inbox.process.returncode == 143
        assert b"inbox stopped; 4 message(s) received" in out


def _shadow_web_extra(folder: Path) -> dict[str, str]:
    """An environment in which starlette cannot be imported, as without the extra."""
    folder.mkdir()
    (folder / "starlette.py").write_text("raise ImportError('not installed')\n")
    return {**clean_env(), "PYTHONPATH": str(folder)}


def test_without_the_web_extra_the_inbox_says_what_to_install(tmp_path: Path) -> None:
    """No web extra: one line naming the pip command and --no-web, exit 2."""
    result = subprocess.run(
        [
            *MAILER,
            "inbox",
            "--port",
            "0",
            "--http-port",
            "0",
            "--dir",
            str(tmp_path / "b"),
        ],
        env=_shadow_web_extra(tmp_path / "shadow"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "pip install 'aiomailer[web]'" in line
    assert "--no-web" in line
    assert "Traceback" not in result.stderr


async def test_without_the_web_extra_no_web_still_serves_smtp(tmp_path: Path) -> None:
    """`--no-web` needs no extra: SMTP starts and stops cleanly."""
    process = await asyncio.create_subprocess_exec(
        *MAILER,
        "inbox",
        "--port",
        "0",
        "--no-web",
        "--dir",
        str(tmp_path / "b"),
        env=_shadow_web_extra(tmp_path / "shadow"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    banner = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
    assert re.search(r"listening on 127\.0\.0\.1:\d+, keeping 0", banner), banner
    process.terminate()
    await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 143


def test_the_inbox_refuses_a_host_that_is_not_loopback(tmp_path: Path) -> None:
    """`--host 0.0.0.0`: one line, exit 2, nothing listens."""
    result = subprocess.run(
        [
            *MAILER,
            "inbox",
            "--host",
            "0.0.0.0",  # noqa: S104 - the point: it is refused
            "--port",
            "0",
            "--http-port",
            "0",
            "--dir",
            str(tmp_path / "b"),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "loopback" in line


async def test_preview_serve_shows_every_set_and_recipient_rows(tmp_path: Path) -> None:
    """`mailer preview --serve -r FILE`: the sets' pages, rows as samples; no inbox API."""
    process = await asyncio.create_subprocess_exec(
        *MAILER,
        "preview",
        "--serve",
        "--http-port",
        "0",
        "--templates-dir",
        str(ROOT / "examples" / "templates"),
        "-r",
        str(ROOT / "examples" / "recipients.csv"),
        env=clean_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = (
            await asyncio.wait_for(process.stdout.readline(), timeout=60)
        ).decode()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)/templates", banner)
        assert match, banner
        base = match.group(1)
        status, page = await asyncio.to_thread(fetch, base + "/templates")
        assert status == 200
        assert b'href="/templates/welcome"' in page
        status, body = await asyncio.to_thread(
            fetch, base + "/api/v1/templates/welcome"
        )
        preview = json.loads(body)
        assert preview["subject"] == "Welcome to Example Shop, Ann Example!"
        # preview.json comes first; the CSV's rows are offered when a set has none.
        assert preview["samples"][0].startswith("preview.json #1")
        status, _ = await asyncio.to_thread(fetch, base + "/api/v1/messages")
        assert status == 404
    finally:
        process.terminate()
        await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 143
