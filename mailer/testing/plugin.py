"""The pytest plugin: fixtures for testing code that sends mail.

Installed with mailer under the ``pytest11`` entry point ``mailer``, so the
fixtures are there without a conftest. Nothing is autouse and nothing happens
at import: each fixture acts only in the tests that ask for it.

- ``mail_outbox``: ``generate_message_client()`` delivers into an ``Outbox``.
- ``mock_send``: ``MessageClient.send`` is an autospecced mock.
- ``mail_queue``: ``send_later`` records into a FakeQueue (no database);
  ``assert_enqueued(...)``, ``await mail_queue.run_jobs()``.
- ``mailer_settings``: ``(**overrides) -> MailerSettings``.
- ``smtp_server``, ``smtp_server_factory``: real SMTP servers in the test's
  loop; ``smtp_server_threaded`` for synchronous code.
- ``smtp_tls``: the test CA (one per session).

The first three keep the developer's ``.env`` and the ``MAILER_*`` variables
pytest inherited out of the code under test, whose default sender is then
``sender@example.test``.

Server options come as keywords (the factory) or from the marker
``@pytest.mark.smtp_server(tls="starttls", auth={"user": "pw"})``; faults can
be planned with ``@pytest.mark.smtp_faults(plan=lambda faults: faults.greeting())``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from unittest.mock import AsyncMock

import pytest

from mailer.config.settings import MailerSettings
from mailer.testing.config import TEST_SENDER, isolated_settings
from mailer.testing.fakes import capture_mail
from mailer.testing.mocking import patch_send
from mailer.testing.outbox import Outbox

if TYPE_CHECKING:
    from mailer.testing.queue import FakeQueue
    from mailer.testing.server.faults import FaultPlan
    from mailer.testing.server.server import SMTPTestServer
    from mailer.testing.server.threaded import ThreadedSMTPTestServer
    from mailer.testing.tls import TLSBundle

F = TypeVar("F", bound=Callable[..., Any])
SERVER_MARKER = "smtp_server"
FAULTS_MARKER = "smtp_faults"


def _without_pytest_asyncio(function: F) -> F:
    """Stand in for pytest_asyncio.fixture: a fixture that explains what is missing."""

    @pytest.fixture(name=function.__name__)
    def missing() -> None:
        pytest.fail(
            f"{function.__name__} needs pytest-asyncio: "
            "pip install 'aiomailer[testing]'",
            pytrace=False,
        )

    return missing  # type: ignore[return-value]  # only ever used as a fixture


# Async fixtures are declared with pytest-asyncio's decorator, so that they work
# in its strict mode (its default) as well as in auto mode.
try:
    import pytest_asyncio
except ImportError:  # mailer without its testing extra
    async_fixture: Callable[[F], F] = _without_pytest_asyncio
else:
    # The decorator is overloaded; we only ever use its bare form.
    async_fixture = pytest_asyncio.fixture  # type: ignore[assignment]


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers (the fixtures' options), for --strict-markers runs."""
    config.addinivalue_line(
        "markers",
        f"{SERVER_MARKER}(**options): SMTPTestServer options for smtp_server and "
        "smtp_server_threaded (tls=, auth=, require_starttls=, smtputf8=, "
        "size_limit=, pipelining=)",
    )
    config.addinivalue_line(
        "markers",
        f"{FAULTS_MARKER}(plan=function): called with the FaultPlan of "
        "smtp_server or smtp_server_threaded before the test runs",
    )


# The MAILER_* variables the test run inherited (the developer's shell, a CI
# job's environment), read when pytest loads the plugin: before any conftest or
# test code runs, so nothing a test suite sets itself is among them.
INHERITED_VARIABLES = {
    key: value for key, value in os.environ.items() if key.upper().startswith("MAILER_")
}


@pytest.fixture
def _mailer_test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the code under test the kit's configuration, the same for every double.

    ``MailerSettings()`` (what ``generate_message_client()`` makes) then reads
    no ``.env`` file and none of the ``MAILER_*`` variables the test run
    inherited, and finds ``MAILER_FROM=sender@example.test`` unless the test
    suite set a sender itself. Variables the suite sets (in a fixture, a
    conftest, the test) are left as they are.
    """
    # A developer's shell or .env (a typo, a real server) must not decide
    # whether, or where, the tests send: only what the suite sets counts.
    for key, value in INHERITED_VARIABLES.items():
        if os.environ.get(key) == value:
            monkeypatch.delenv(key)
    monkeypatch.setitem(MailerSettings.model_config, "env_file", None)
    # Application code rarely passes a sender: it relies on MAILER_FROM, which
    # a project's test run has no reason to set.
    if "MAILER_FROM" not in os.environ:
        monkeypatch.setenv("MAILER_FROM", TEST_SENDER)


@pytest.fixture
def mail_outbox(_mailer_test_environment: None) -> Iterator[Outbox]:
    """Deliver what generate_message_client()'s clients send into an Outbox.

    The whole pipeline runs (rendering, validation, Bcc stripping, bytes);
    only the SMTP connection is replaced. The code under test reads no
    ``.env`` and none of the ``MAILER_*`` variables pytest inherited, and its
    default sender is ``sender@example.test`` (set ``MAILER_FROM`` in the
    suite to change it). Restored after the test.
    """
    with capture_mail() as outbox:
        yield outbox


@pytest.fixture
def mail_queue(_mailer_test_environment: None) -> Iterator[FakeQueue]:
    """Record what ``send_later`` enqueues in a FakeQueue instead of PostgreSQL.

    ``mail_queue.assert_enqueued(Mail(...))`` checks it;
    ``await mail_queue.run_jobs()`` sends it through
    ``generate_message_client()`` (into ``mail_outbox`` when that fixture is
    used too). The code under test gets the kit's configuration, as with
    ``mail_outbox``. Restored after the test.
    """
    from mailer.testing.queue import fake_queue

    with fake_queue() as queue:
        yield queue


@pytest.fixture
def mock_send(
    request: pytest.FixtureRequest, _mailer_test_environment: None
) -> Iterator[AsyncMock]:
    """Patch ``MessageClient.send`` with an autospecced mock for the test.

    It returns the ``SendResult`` of a message accepted by every recipient
    (set ``side_effect`` to change that). When the test also uses
    ``mail_outbox``, each accepted message is recorded there too. The
    configuration the code under test sees is ``mail_outbox``'s.
    """
    outbox = None
    if "mail_outbox" in request.fixturenames:
        outbox = request.getfixturevalue("mail_outbox")
    with patch_send(outbox) as send:
        yield send


@pytest.fixture
def mailer_settings(
    _mailer_test_environment: None,
) -> Callable[..., MailerSettings]:
    """Return ``make(**overrides) -> MailerSettings`` for tests.

    The settings it makes come from the keywords alone (with
    ``from_="sender@example.test"`` unless given). For the test's duration,
    the code under test sees ``mail_outbox``'s configuration: no ``.env``,
    none of the ``MAILER_*`` variables pytest inherited, and
    ``MAILER_FROM=sender@example.test`` unless the suite set one.
    """

    def make(**overrides: Any) -> MailerSettings:
        return isolated_settings(**{"from_": TEST_SENDER, **overrides})

    return make


@pytest.fixture(scope="session")
def smtp_tls(tmp_path_factory: pytest.TempPathFactory) -> TLSBundle:
    """Return the session's test CA and certificates (localhost, 127.0.0.1, ::1).

    ``smtp_server`` uses it for TLS, so ``smtp_tls.client_context`` and
    ``smtp_tls.ca_path`` trust those servers with verification on.
    """
    from mailer.testing.tls import TLSBundle  # trustme is heavy: load it on use

    return TLSBundle.create(tmp_path_factory.mktemp("mailer-smtp-tls"))


def _server_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker(SERVER_MARKER)
    options: dict[str, Any] = {}
    if marker is not None:
        if marker.args:
            raise pytest.UsageError(
                f"@pytest.mark.{SERVER_MARKER} takes keyword options only"
            )
        options.update(marker.kwargs)
    return _with_tls_bundle(request, options)


def _with_tls_bundle(
    request: pytest.FixtureRequest, options: dict[str, Any]
) -> dict[str, Any]:
    if options.get("tls") is not None and options.get("tls_bundle") is None:
        options["tls_bundle"] = request.getfixturevalue("smtp_tls")
    return options


def _plan_marked_faults(request: pytest.FixtureRequest, faults: FaultPlan) -> None:
    # Outermost first (module, class, then the test's own markers).
    for marker in reversed(list(request.node.iter_markers(FAULTS_MARKER))):
        plan = marker.kwargs.get("plan")
        if marker.args or not callable(plan) or set(marker.kwargs) != {"plan"}:
            # pytest takes a lone callable argument for the function to mark,
            # so the function must be passed by keyword.
            raise pytest.UsageError(
                f"use @pytest.mark.{FAULTS_MARKER}(plan=function), where the "
                "function takes the server's FaultPlan"
            )
        plan(faults)


@async_fixture
async def smtp_server(request: pytest.FixtureRequest) -> AsyncIterator[SMTPTestServer]:
    """Run a real SMTP server in the test's event loop, on 127.0.0.1 and a free port.

    Options come from ``@pytest.mark.smtp_server(...)``; faults from
    ``@pytest.mark.smtp_faults(...)`` or ``smtp_server.faults`` in the test.
    """
    from mailer.testing.server.server import SMTPTestServer

    async with SMTPTestServer(**_server_options(request)) as server:
        _plan_marked_faults(request, server.faults)
        yield server


@async_fixture
async def smtp_server_factory(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[SMTPTestServer]]]:
    """Return ``await start(**options)`` to start servers; all stop after the test."""
    from mailer.testing.server.server import SMTPTestServer

    started: list[SMTPTestServer] = []

    async def start(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(**_with_tls_bundle(request, dict(options)))
        await server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            await server.stop()


@pytest.fixture
def smtp_server_threaded(
    request: pytest.FixtureRequest,
) -> Iterator[ThreadedSMTPTestServer]:
    """Run the SMTP test server in a thread, for synchronous code and tests.

    Same options and faults markers as ``smtp_server``.
    """
    from mailer.testing.server.threaded import ThreadedSMTPTestServer

    with ThreadedSMTPTestServer(**_server_options(request)) as server:
        _plan_marked_faults(request, server.faults)
        yield server
