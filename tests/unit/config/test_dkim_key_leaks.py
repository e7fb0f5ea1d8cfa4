"""The DKIM private key never shows in an error, even when set in the wrong key.

Found by attacking the settings: the PEM pasted into
MAILER_DKIM_PRIVATE_KEY_FILE (instead of MAILER_DKIM_PRIVATE_KEY) was printed
whole in "cannot read -----BEGIN PRIVATE KEY----- MIIE...: No such file".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer import MailerSettings
from mailer.cli.app import app
from mailer.exceptions import ConfigError
from mailer.testing import make_dkim_key

runner = CliRunner()


def key_material(pem: str) -> list[str]:
    """Every run of 12 base64 characters of the key's body, as it could leak."""
    body = "".join(pem.strip().splitlines()[1:-1])
    return [body[i : i + 12] for i in range(0, len(body) - 12, 6)]


def assert_no_key(text: str, pem: str) -> None:
    """Fail if any piece of the key's base64 body is in ``text``."""
    leaked = [piece for piece in key_material(pem) if piece in text]
    assert not leaked, f"key material in the output: {leaked[:3]}"
    assert "PRIVATE KEY" not in text


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize(
    "form", ["pem", "one line", "body only"], ids=["pem", "one-line", "body"]
)
def test_a_key_given_as_the_key_file_path_is_never_echoed(kind: str, form: str) -> None:
    """The PEM (or its base64 body) in MAILER_DKIM_PRIVATE_KEY_FILE: named, not shown."""
    pem, _ = make_dkim_key(kind)  # type: ignore[arg-type]
    lines = pem.strip().splitlines()
    value = {
        "pem": pem,
        "one line": " ".join(lines),
        "body only": "".join(lines[1:-1]),
    }[form]
    with pytest.raises(ConfigError) as caught:
        MailerSettings(
            _env_file=None,
            from_="shop@example.test",
            dkim_domain="example.test",
            dkim_selector="s1",
            dkim_private_key_file=value,
        )
    message = str(caught.value)
    assert message.startswith("MAILER_DKIM_PRIVATE_KEY_FILE: cannot read")
    assert "MAILER_DKIM_PRIVATE_KEY" in message.removeprefix(
        "MAILER_DKIM_PRIVATE_KEY_FILE"
    )
    assert_no_key(message, pem)


def test_a_missing_key_file_is_still_named(tmp_path: Path) -> None:
    """A real path that is missing is shown, so a typo can be found."""
    missing = tmp_path / "keys" / "mail2026.example.test.pem"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        MailerSettings(
            _env_file=None,
            from_="shop@example.test",
            dkim_domain="example.test",
            dkim_selector="s1",
            dkim_private_key_file=missing,
        )


def test_the_cli_shows_no_key_pasted_as_its_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mailer send with the PEM in the _FILE key: one line, exit 2, no key material."""
    pem, _ = make_dkim_key("rsa")
    monkeypatch.setenv("MAILER_FROM", "shop@example.test")
    monkeypatch.setenv("MAILER_DKIM_DOMAIN", "example.test")
    monkeypatch.setenv("MAILER_DKIM_SELECTOR", "s1")
    monkeypatch.setenv("MAILER_DKIM_PRIVATE_KEY_FILE", pem)
    result = runner.invoke(
        app, ["send", "--to", "ann@example.test", "--subject", "s", "--text", "t"]
    )
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "MAILER_DKIM_PRIVATE_KEY_FILE" in result.output
    assert_no_key(result.output, pem)
