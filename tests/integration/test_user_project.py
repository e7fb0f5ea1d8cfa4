"""The plugin as users meet it: separate pytest processes, no conftest of ours."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

USER_PROJECT = Path(__file__).resolve().parents[2] / "examples" / "user_project"
USER_PROJECT_TESTS = 7


def run_pytest(
    *args: str,
    cwd: Path,
    pythonpath: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(extra_env or {})
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_the_example_user_project_passes_in_both_asyncio_modes(mode: str) -> None:
    """examples/user_project: every test passes, none skipped, no warning."""
    assert not list(USER_PROJECT.rglob("conftest.py"))
    result = run_pytest("-o", f"asyncio_mode={mode}", cwd=USER_PROJECT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"asyncio: mode=Mode.{mode.upper()}" in output
    summary = output.strip().splitlines()[-1]
    assert re.fullmatch(rf"=+ {USER_PROJECT_TESTS} passed in [\d.]+s =+", summary), (
        summary
    )


def test_installing_mailer_does_not_disturb_other_test_suites(tmp_path: Path) -> None:
    """A project that never mentions mail: strict markers, warnings as errors, all pass."""
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'addopts = ["--strict-markers", "--strict-config"]\n'
        'filterwarnings = ["error"]\n'
        'asyncio_default_fixture_loop_scope = "function"\n'
    )
    (tmp_path / "test_plain.py").write_text(
        "import pytest\n\n"
        "def test_sync():\n    assert 1 + 1 == 2\n\n"
        "@pytest.mark.asyncio\nasync def test_async():\n    assert True\n\n"
        "@pytest.fixture\ndef outbox():\n    return []\n\n"
        "def test_own_fixture_named_like_ours(outbox):\n    assert outbox == []\n"
    )
    result = run_pytest("-q", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("3 passed")


def test_the_plugin_is_loaded_from_the_entry_point_and_can_be_disabled(
    tmp_path: Path,
) -> None:
    """The markers come with the plugin named 'mailer'; -p no:mailer removes them."""
    with_plugin = run_pytest("--markers", cwd=tmp_path).stdout
    without = run_pytest("-p", "no:mailer", "--markers", cwd=tmp_path).stdout
    assert "@pytest.mark.smtp_server(**options)" in with_plugin
    assert "@pytest.mark.smtp_faults(plan=function)" in with_plugin
    assert "smtp_server" not in without


def test_without_pytest_asyncio_the_async_fixtures_say_what_is_missing(
    tmp_path: Path,
) -> None:
    """pytest-asyncio absent: other tests still run; smtp_server explains the need."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "test_it.py").write_text(
        "def test_plain():\n    assert True\n\n"
        "def test_server(smtp_server):\n    pass\n\n"
        "def test_outbox(mail_outbox):\n    mail_outbox.assert_nothing_sent()\n"
    )
    # A package of the same name, first on the path, that fails to import.
    shadow = tmp_path / "shadow" / "pytest_asyncio"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    result = run_pytest(
        "-p",
        "no:asyncio",
        "-q",
        cwd=tmp_path / "project",
        pythonpath=tmp_path / "shadow",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "smtp_server needs pytest-asyncio: pip install 'aiomailer[testing]'"
        in result.stdout
    )
    # The fixture fails in setup: an error for that test, the others pass.
    assert result.stdout.strip().splitlines()[-1].startswith("2 passed, 1 error")


# -- issue 12.16: the most ordinary application code, in the most bare project --

PLAIN_APP = '''\
"""Application code as people write it: no settings passed anywhere."""

from mailer import Message, generate_message_client, send_messages


async def send_welcome(email):
    async with generate_message_client() as client:
        return await client.send(Message(to=email, subject="Welcome", body="Hi!"))


async def send_newsletter(emails):
    return await send_messages("news", [{"email": email} for email in emails])
'''

PLAIN_TESTS = '''\
"""Tests with the plugin's fixtures only: no conftest, no settings passed."""

from app import send_newsletter, send_welcome

from mailer.testing import Contains, Mail


async def test_mail_outbox(mail_outbox):
    """The outbox gets the mail, from the test sender."""
    result = await send_welcome("ann@example.test")
    assert result.is_sent
    mail_outbox.one(Mail(to="ann@example.test", from_="sender@example.test"))


async def test_mock_send(mock_send):
    """The mock is awaited with the message; its result is sent."""
    result = await send_welcome("ann@example.test")
    assert result.is_sent
    mock_send.assert_awaited_once_with(Mail(to="ann@example.test", subject="Welcome"))


async def test_send_messages_into_the_outbox(mail_outbox):
    """A batch renders from ./templates and lands in the outbox."""
    report = await send_newsletter(["ann@example.test", "bob@example.test"])
    assert (report.sent, report.failed) == (2, 0)
    mail_outbox.assert_sent(Mail(text=Contains("news")), count=2)


async def test_send_messages_with_the_mock(mock_send):
    """A batch goes through the mock too."""
    report = await send_newsletter(["ann@example.test"])
    assert report.sent == 1
    mock_send.assert_awaited_once_with(Mail(to="ann@example.test"))


async def test_a_sender_set_by_the_test_wins(mail_outbox, monkeypatch):
    """MAILER_FROM set in the test replaces the test default."""
    monkeypatch.setenv("MAILER_FROM", "Shop <shop@example.test>")
    await send_welcome("ann@example.test")
    mail_outbox.one(Mail(from_="shop@example.test"))
'''

PLAIN_TEST_COUNT = 5


def write_plain_project(root: Path) -> Path:
    """Write a project with no conftest, no .env and no MAILER_* anywhere."""
    (root / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'asyncio_mode = "auto"\n'
        'asyncio_default_fixture_loop_scope = "function"\n'
        'filterwarnings = ["error"]\n'
        'pythonpath = ["."]\n'
    )
    (root / "app.py").write_text(PLAIN_APP)
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text(PLAIN_TESTS)
    news = root / "templates" / "news"
    news.mkdir(parents=True)
    (news / "subject.txt").write_text("This month's news\n")
    (news / "body.txt").write_text("Hello {{ email }}, here is the news.\n")
    return root


def test_fixtures_work_with_code_that_passes_no_settings(tmp_path: Path) -> None:
    """No .env, no MAILER_FROM: mail_outbox and mock_send give a test sender (12.16)."""
    project = write_plain_project(tmp_path)
    assert not list(project.rglob("conftest.py"))
    assert not (project / ".env").exists()
    result = run_pytest("-q", cwd=project)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.strip().splitlines()[-1].startswith(f"{PLAIN_TEST_COUNT} passed")


def test_fixtures_keep_the_developers_configuration_out(tmp_path: Path) -> None:
    """A .env with a typo and MAILER_* variables reach neither double (12.16)."""
    project = write_plain_project(tmp_path)
    (project / ".env").write_text(
        "MAILER_SMTP_HSOT=smtp.example.com\nMAILER_FROM=dev@example.com\n"
    )
    result = run_pytest(
        "-q",
        cwd=project,
        extra_env={"MAILER_SMTP_PORT": "not-a-port", "MAILER_FROM": "me@example.com"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.strip().splitlines()[-1].startswith(f"{PLAIN_TEST_COUNT} passed")
