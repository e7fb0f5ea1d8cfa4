"""Real SMTP servers for integration tests, from mailer's own pytest plugin.

New tests use the plugin's fixtures (``smtp_server`` and its markers,
``smtp_server_factory``, ``smtp_tls``, faults). The fixtures below keep the
older names working for tests written against ``start_inbox`` directly; the
certificates all come from the one test CA of ``smtp_tls``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailer import MailerSettings
from mailer.inbox import Inbox, start_inbox
from mailer.testing import SMTPTestServer, TLSBundle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def ca(smtp_tls: TLSBundle) -> trustme.CA:
    """The test CA (smtp_tls's)."""
    return smtp_tls.ca


@pytest.fixture(scope="session")
def ca_file(smtp_tls: TLSBundle) -> Path:
    """The test CA's certificate as a PEM file, for MAILER_SMTP_CA_FILE."""
    return smtp_tls.ca_path


@pytest.fixture(scope="session")
def server_tls(smtp_tls: TLSBundle) -> ssl.SSLContext:
    """A server context with a certificate for localhost, 127.0.0.1 and ::1."""
    return smtp_tls.server_context


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    """A plain SMTP inbox (prefer smtp_server, which records more)."""
    async with await start_inbox() as server:
        yield server


def _test_server_settings(server: SMTPTestServer) -> dict[str, Any]:
    """The TLS mode, test CA and credentials SMTPTestServer.settings() would use."""
    settings = server.settings()
    password = settings.smtp_password
    return {
        "smtp_tls": settings.smtp_tls,
        "smtp_ca_file": settings.smtp_ca_file,
        "smtp_username": settings.smtp_username,
        "smtp_password": password.get_secret_value() if password else None,
    }


@pytest.fixture
def settings_for() -> Callable[..., MailerSettings]:
    """Settings pointing at a given server, sending as the example shop."""

    def make(server: Inbox | SMTPTestServer, **overrides: Any) -> MailerSettings:
        if isinstance(server, SMTPTestServer):
            overrides = {**_test_server_settings(server), **overrides}
        values: dict[str, Any] = {
            "_env_file": None,
            "smtp_host": server.host,
            "smtp_port": server.port,
            "smtp_tls": "none",
            "from_": "Example Shop <shop@example.test>",
            "templates_dir": EXAMPLES / "templates",
            "timeout": 5,
            # Retries stay on, as in production, but wait milliseconds.
            "retry_backoff": 0.001,
            "retry_max_backoff": 0.005,
        }
        values.update(overrides)
        return MailerSettings(**values)

    return make
