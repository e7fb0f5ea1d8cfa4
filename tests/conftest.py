"""Shared fixtures: isolation from the developer's own configuration, and factories."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer import MailerSettings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as `integration`, so none is missed."""
    for item in items:
        if "integration" in Path(str(item.path)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """Keep the developer's MAILER_* variables and .env out of every test."""
    for key in list(os.environ):
        if key.upper().startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return


@pytest.fixture
def make_settings() -> Callable[..., MailerSettings]:
    """Build settings from keywords only (no .env), with a sender and the examples."""

    def make(**overrides: Any) -> MailerSettings:
        values: dict[str, Any] = {
            "_env_file": None,
            "from_": "Example Shop <shop@example.test>",
            "templates_dir": EXAMPLES / "templates",
            # Retries stay on, as in production, but wait milliseconds.
            "retry_backoff": 0.001,
            "retry_max_backoff": 0.005,
        }
        values.update(overrides)
        return MailerSettings(**values)

    return make


@pytest.fixture
def configured_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set MAILER_FROM and MAILER_TEMPLATES_DIR (the examples), as a CLI user would."""
    monkeypatch.setenv("MAILER_FROM", "Example Shop <shop@example.test>")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(EXAMPLES / "templates"))


@pytest.fixture
def settings(make_settings: Callable[..., MailerSettings]) -> MailerSettings:
    """Settings for loopback SMTP with the example templates."""
    return make_settings()
