"""Without an optional extra, one line says which extra to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mailer import ConfigError, TemplateError, render
from mailer.content import dkim
from mailer.testing import make_dkim_key


def test_dkim_without_its_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No dkimpy: a ConfigError says pip install 'aiomailer[dkim]'."""
    key = dkim.load_key(
        make_dkim_key("ed25519")[0].encode(), key="MAILER_DKIM_PRIVATE_KEY"
    )
    monkeypatch.setitem(sys.modules, "dkim", None)  # import dkim now fails
    with pytest.raises(
        ConfigError,
        match=r"^DKIM signing needs the dkim extra: pip install 'aiomailer\[dkim\]'$",
    ):
        dkim.DKIMSigner("example.test", "s", key)


def test_html_first_without_its_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No markdownify: rendering a set without body.txt says pip install 'aiomailer[html]'."""
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "subject.txt").write_text("s\n")
    (tmp_path / "news" / "body.html").write_text("<p>x</p>")
    monkeypatch.setitem(sys.modules, "markdownify", None)
    with pytest.raises(
        TemplateError, match=r"needs the html extra: pip install 'aiomailer\[html\]'$"
    ):
        render("news", to="a@example.test", templates_dir=tmp_path)
