"""Real SMTP servers for integration tests: aiosmtpd in the test's loop, on 127.0.0.1:0."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailer import MailerSettings
from mailer.inbox import Inbox, start_inbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A certificate authority made for this test run."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA's certificate as a PEM file, for MAILER_SMTP_CA_FILE."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for localhost, 127.0.0.1 and ::1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(context)
    return context


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    """A plain SMTP inbox."""
    async with await start_inbox() as server:
        yield server


@pytest.fixture
def settings_for() -> Callable[..., MailerSettings]:
    """Settings pointing at a given inbox."""

    def make(server: Inbox, **overrides: Any) -> MailerSettings:
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
