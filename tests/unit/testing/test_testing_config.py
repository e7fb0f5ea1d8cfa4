"""isolated_settings: MailerSettings from keywords alone, validated, nothing read."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer import ConfigError, MailerSettings
from mailer.testing import isolated_settings


def test_it_equals_settings_built_the_usual_way_in_a_clean_environment() -> None:
    """Same keywords, clean environment: the same settings as MailerSettings()."""
    values = {
        "smtp_host": "smtp.example.test",
        "smtp_tls": "starttls",
        "smtp_username": "u",
        "smtp_password": "p",
        "from_": "Shop <shop@example.test>",
        "concurrency": 3,
    }
    assert isolated_settings(**values) == MailerSettings(_env_file=None, **values)
    assert isolated_settings() == MailerSettings(_env_file=None)


def test_the_environment_and_dotenv_are_not_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MAILER_* variables (known or not) and a .env file change nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAILER_FROM=dotenv@example.test\n")
    monkeypatch.setenv("MAILER_TIMEOUT", "99")
    monkeypatch.setenv("MAILER_TYPO_KEY", "x")
    settings = isolated_settings(smtp_host="127.0.0.1")
    assert settings.from_ is None
    assert settings.timeout == 30
    with pytest.raises(ConfigError, match="MAILER_TYPO_KEY"):
        MailerSettings()  # the usual way does read them


def test_errors_are_one_line_and_name_the_key() -> None:
    """Bad values and unknown names give the same one-line ConfigError as usual."""
    with pytest.raises(ConfigError, match=r"^MAILER_SMTP_PORT: ") as caught:
        isolated_settings(smtp_port=70000)
    assert caught.value.key == "MAILER_SMTP_PORT"
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"^MAILER_SMTP_PASSWORD: required"):
        isolated_settings(smtp_username="u")
    with pytest.raises(
        ConfigError,
        match=r"^concurency: unknown setting \(did you mean 'concurrency'\?\)",
    ):
        isolated_settings(concurency=2)


def test_the_password_never_appears_in_an_error() -> None:
    """A bad password value is not echoed."""
    with pytest.raises(ConfigError) as caught:
        isolated_settings(smtp_username="u", smtp_password="bad\r")
    assert "bad" not in str(caught.value)
