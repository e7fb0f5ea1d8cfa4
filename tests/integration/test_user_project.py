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
    *args: str, cwd: Path, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
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
