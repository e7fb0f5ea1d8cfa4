"""Integration tests use mailer's own pytest plugin: smtp_server, smtp_tls, faults.

The servers are real aiosmtpd servers in the test's loop on 127.0.0.1 and a
free port, with certificates from a CA made for the run (``smtp_tls``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailer import MailerSettings
from mailer.testing import SMTPTestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHOP = "Example Shop <shop@example.test>"


@pytest.fixture
def settings_for() -> Callable[..., MailerSettings]:
    """Settings for a test server, sending as the example shop with its templates."""

    def make(server: SMTPTestServer, **overrides: Any) -> MailerSettings:
        values: dict[str, Any] = {
            "from_": SHOP,
            "templates_dir": EXAMPLES / "templates",
            "timeout": 5,
        }
        values.update(overrides)
        return server.settings(**values)

    return make
