"""MailerSettings: .env and environment, defaults, and one-line errors without secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer import ConfigError, MailerSettings

SECRET = "s3cret-Pa55word"


def write_env(text: str) -> None:
    Path(".env").write_text(text, encoding="utf-8")


def test_reads_a_dotenv_file_in_the_current_directory() -> None:
    """Values in ./.env are read and typed."""
    write_env(
        "MAILER_SMTP_HOST=smtp.example.test\nMAILER_SMTP_PORT=2525\n"
        "MAILER_FROM=Shop <shop@example.test>\nMAILER_CONCURRENCY=8\nDATABASE_URL=x\n"
    )
    settings = MailerSettings()
    assert settings.smtp_host == "smtp.example.test"
    assert settings.port == 2525
    assert settings.concurrency == 8
    assert settings.default_sender is not None
    assert settings.default_sender.display_name == "Shop"


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real environment variable overrides the same key in .env."""
    write_env("MAILER_SMTP_HOST=from-file.example.test\n")
    monkeypatch.setenv("MAILER_SMTP_HOST", "from-env.example.test")
    assert MailerSettings().smtp_host == "from-env.example.test"


def test_defaults_need_no_configuration() -> None:
    """With nothing set: localhost, no TLS (loopback), port 25, 5 connections."""
    settings = MailerSettings()
    assert (settings.smtp_host, settings.tls_mode, settings.port) == (
        "localhost",
        "none",
        25,
    )
    assert settings.concurrency == 5
    assert settings.timeout == 30.0
    assert settings.from_ is None


@pytest.mark.parametrize(
    ("host", "mode", "port"),
    [
        ("smtp.example.test", "starttls", 587),
        ("127.0.0.1", "none", 25),
        ("::1", "none", 25),
    ],
)
def test_tls_defaults_to_starttls_off_loopback(host: str, mode: str, port: int) -> None:
    """A remote host gets STARTTLS on 587 by default; loopback gets plain on 25."""
    settings = MailerSettings(_env_file=None, smtp_host=host)
    assert (settings.tls_mode, settings.port) == (mode, port)


def test_implicit_tls_defaults_to_port_465() -> None:
    """tls mode uses 465 unless a port is set."""
    assert MailerSettings(_env_file=None, smtp_tls="tls").port == 465


@pytest.mark.parametrize(
    ("line", "key", "fragment"),
    [
        ("MAILER_SMTP_PORT=abc", "MAILER_SMTP_PORT", "valid integer"),
        ("MAILER_SMTP_PORT=70000", "MAILER_SMTP_PORT", "less than or equal to 65535"),
        ("MAILER_SMTP_PORT=0", "MAILER_SMTP_PORT", "greater than or equal to 1"),
        ("MAILER_TIMEOUT=-1", "MAILER_TIMEOUT", "greater than 0"),
        ("MAILER_TIMEOUT=nan", "MAILER_TIMEOUT", "finite number"),
        ("MAILER_CONCURRENCY=0", "MAILER_CONCURRENCY", "greater than or equal to 1"),
        (
            "MAILER_SMTP_TLS=ssl",
            "MAILER_SMTP_TLS",
            "'none', 'opportunistic', 'starttls' or 'tls'",
        ),
        ("MAILER_FROM=not an address", "MAILER_FROM", "invalid address"),
        (
            "MAILER_SMTP_HOST=smtp.example.test:587",
            "MAILER_SMTP_HOST",
            "MAILER_SMTP_PORT",
        ),
        (
            "MAILER_SMTP_CA_FILE=/nonexistent/ca.pem",
            "MAILER_SMTP_CA_FILE",
            "no such file",
        ),
    ],
)
def test_bad_values_fail_in_one_line_naming_the_key(
    line: str, key: str, fragment: str
) -> None:
    """Each bad value gives a one-line ConfigError that starts with its key."""
    write_env(line + "\n")
    with pytest.raises(ConfigError) as caught:
        MailerSettings()
    message = str(caught.value)
    assert message.startswith(f"{key}: ")
    assert fragment in message
    assert "\n" not in message
    assert caught.value.key == key


def test_a_typo_in_a_secret_key_is_named_and_the_value_never_shown() -> None:
    """A misspelt MAILER_ key is an error with a suggestion, without its value."""
    write_env(f"MAILER_SMTP_USERNAME=user\nMAILER_SMTP_PASSWROD={SECRET}\n")
    with pytest.raises(ConfigError) as caught:
        MailerSettings()
    assert str(caught.value) == (
        "MAILER_SMTP_PASSWROD: unknown setting (did you mean MAILER_SMTP_PASSWORD?)"
    )
    assert SECRET not in repr(caught.value)


def test_a_bad_password_value_is_not_echoed() -> None:
    """A password that fails validation is never put in the error."""
    write_env(f"MAILER_SMTP_USERNAME=user\nMAILER_SMTP_PASSWORD={SECRET}\x07\n")
    with pytest.raises(ConfigError, match="^MAILER_SMTP_PASSWORD: ") as caught:
        MailerSettings()
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


def test_password_is_never_in_repr_or_dump() -> None:
    """The password is a SecretStr: repr, str and model_dump mask it."""
    settings = MailerSettings(_env_file=None, smtp_username="u", smtp_password=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"smtp_username": "u"}, "MAILER_SMTP_PASSWORD"),
        ({"smtp_password": SECRET}, "MAILER_SMTP_USERNAME"),
    ],
)
def test_login_needs_both_username_and_password(
    values: dict[str, str], key: str
) -> None:
    """A username without a password (or the reverse) is an error naming the missing one."""
    with pytest.raises(ConfigError, match=f"^{key}: required"):
        MailerSettings(_env_file=None, **values)


def test_refuses_to_send_a_password_in_clear_to_a_remote_host() -> None:
    """tls=none with credentials is refused for a non-loopback host."""
    with pytest.raises(
        ConfigError, match="^MAILER_SMTP_TLS: 'none' would send the password in clear"
    ) as caught:
        MailerSettings(
            _env_file=None,
            smtp_host="smtp.example.test",
            smtp_tls="none",
            smtp_username="u",
            smtp_password=SECRET,
        )
    assert SECRET not in str(caught.value)


def test_credentials_over_plain_loopback_are_allowed() -> None:
    """Loopback (a local relay or test server) may take AUTH without TLS."""
    settings = MailerSettings(
        _env_file=None, smtp_host="127.0.0.1", smtp_username="u", smtp_password=SECRET
    )
    assert settings.tls_mode == "none"


def test_unknown_keyword_is_an_error() -> None:
    """A misspelt keyword argument is reported, not silently ignored."""
    with pytest.raises(
        ConfigError, match="^smtp_hots: unknown setting .did you mean MAILER_SMTP_HOST"
    ):
        MailerSettings(_env_file=None, smtp_hots="x")


def test_unknown_environment_variable_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A misspelt MAILER_ environment variable is reported too."""
    monkeypatch.setenv("MAILER_TIMEOUTS", "5")
    with pytest.raises(
        ConfigError,
        match="^MAILER_TIMEOUTS: unknown setting .did you mean MAILER_TIMEOUT",
    ):
        MailerSettings()


def test_empty_values_mean_default() -> None:
    """`KEY=` in .env leaves the default instead of an empty string."""
    write_env("MAILER_SMTP_USERNAME=\nMAILER_SMTP_PASSWORD=\nMAILER_SMTP_PORT=\n")
    settings = MailerSettings()
    assert settings.smtp_username is None
    assert settings.port == 25


def test_env_example_documents_every_key() -> None:
    """Every setting appears in .env.example with a comment above it."""
    from mailer.config.settings import env_names

    example = (Path(__file__).resolve().parents[3] / ".env.example").read_text(
        encoding="utf-8"
    )
    lines = example.splitlines()
    for key in env_names().values():
        matches = [
            i for i, line in enumerate(lines) if line.lstrip("# ").startswith(f"{key}=")
        ]
        assert matches, f"{key} is missing from .env.example"
        above = matches[0] - 1
        while above >= 0 and "=" in lines[above] and not lines[above].startswith("# "):
            above -= 1  # keys documented together share one comment
        assert above >= 0, f"{key} has no comment"
        assert lines[above].startswith("#"), f"{key} has no comment"


# .env values as written in the file, and what the password must be. The
# environment holds DOTENV_TEST_X so that any ${...} expansion would show.
LITERAL_VALUES = [
    ("'pa${DOTENV_TEST_X}ss'", "pa${DOTENV_TEST_X}ss"),
    ('"pa${DOTENV_TEST_X}ss"', "pa${DOTENV_TEST_X}ss"),
    ("pa${DOTENV_TEST_X}ss", "pa${DOTENV_TEST_X}ss"),
    ("pa$DOTENV_TEST_X", "pa$DOTENV_TEST_X"),
    ("'$1$abc$'", "$1$abc$"),
    ("a#b", "a#b"),
    ("'a #b'", "a #b"),
    ('"a #b"', "a #b"),
    ("' spaced out '", " spaced out "),
    ("'say \"hi\"'", 'say "hi"'),
    ('"say \\"hi\\""', 'say "hi"'),
    ('"it\'s"', "it's"),
]


@pytest.mark.parametrize(("written", "password"), LITERAL_VALUES)
def test_dotenv_values_are_read_literally(
    monkeypatch: pytest.MonkeyPatch, written: str, password: str
) -> None:
    """$, ${VAR}, #, quotes and spaces in a .env password are kept as written (no expansion)."""
    monkeypatch.setenv("DOTENV_TEST_X", "EXPANDED")
    write_env(
        "MAILER_SMTP_USERNAME=user\n"
        f"MAILER_SMTP_PASSWORD={written}\n"
        "MAILER_FROM='Shop <shop@example.test>'\n"
    )
    settings = MailerSettings()
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == password
    assert settings.from_ == "Shop <shop@example.test>"


def test_a_dotenv_line_that_does_not_parse_names_the_line_and_key_not_the_value() -> (
    None
):
    """An unreadable line is an error (it was a warning and a dropped setting), without its value."""
    write_env(
        "MAILER_SMTP_HOST=localhost\nMAILER_SMTP_USERNAME=u\n"
        f"MAILER_SMTP_PASSWORD='{SECRET}''x'\n"
    )
    with pytest.raises(ConfigError) as caught:
        MailerSettings()
    text = str(caught.value)
    assert text.startswith(".env: line 3 (MAILER_SMTP_PASSWORD) cannot be read")
    assert "single quotes" in text
    assert SECRET not in text
    assert caught.value.key == "MAILER_SMTP_PASSWORD"


def test_a_dotenv_file_that_is_not_utf8_is_one_line() -> None:
    """A .env saved in another encoding: one line saying so."""
    Path(".env").write_bytes("MAILER_FROM=Zo\xeb <z@example.test>\n".encode("cp1252"))
    with pytest.raises(ConfigError, match=r"\.env: not a utf-8 text file"):
        MailerSettings()


def test_an_explicit_env_file_is_read_literally_too(tmp_path: Path) -> None:
    """_env_file=PATH goes through the same literal reader."""
    other = tmp_path / "prod.env"
    other.write_text(
        "MAILER_SMTP_USERNAME=u\nMAILER_SMTP_PASSWORD='x${HOME}y'\n", encoding="utf-8"
    )
    settings = MailerSettings(_env_file=other)
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "x${HOME}y"
