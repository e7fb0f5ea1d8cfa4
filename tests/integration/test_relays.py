"""MAILER_DSN relays against real servers: failover, cool-down, round robin, no silent auth failover."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailer import AuthenticationError, Message, MessageClient
from mailer.config.settings import MailerSettings
from mailer.testing import SMTPTestServer


def message(n: int = 1) -> Message:
    return Message(to=f"user{n}@example.test", subject=f"Message {n}", body="b")


def dsn(mode: str, *servers: SMTPTestServer, credentials: str = "") -> str:
    urls = " ".join(f"smtp://{credentials}{s.host}:{s.port}?tls=none" for s in servers)
    return f"{mode}({urls})"


@pytest.fixture
def dsn_settings(
    make_settings: Callable[..., MailerSettings],
) -> Callable[..., MailerSettings]:
    """Build make_settings for a MAILER_DSN, with 10-50 ms retries and a 5 s timeout."""

    def make(dsn_value: str, **overrides: Any) -> MailerSettings:
        values: dict[str, Any] = {
            "retry_backoff": 0.01,
            "retry_max_backoff": 0.05,
            "timeout": 5,
        }
        values.update(overrides)
        return make_settings(dsn=dsn_value, **values)

    return make


async def test_a_relay_that_refuses_connections_fails_over_and_cools_down(
    dsn_settings: Callable[..., MailerSettings],
) -> None:
    """421 greeting on relay 1: relay 2 takes every message; relay 1 is tried once."""
    async with SMTPTestServer() as down, SMTPTestServer() as up:
        refusal = down.faults.greeting(421, "4.3.2 shutting down")
        settings = dsn_settings(dsn("failover", down, up), concurrency=1)
        async with MessageClient(settings) as client:
            results = await client.send_many([message(n) for n in range(5)])
    assert all(r.is_sent and r.attempts == 1 for r in results)
    assert len(up.outbox) == 5
    assert len(down.outbox) == 0
    refusal.assert_fired(1)  # then skipped for MAILER_RELAY_COOLDOWN


async def test_every_relay_down_is_a_transient_failure_retried_later(
    dsn_settings: Callable[..., MailerSettings],
) -> None:
    """Both relays refuse once: the message is retried, and goes through."""
    async with SMTPTestServer() as first, SMTPTestServer() as second:
        first.faults.greeting(421, times=1)
        second.faults.greeting(421, times=1)
        settings = dsn_settings(dsn("failover", first, second), relay_cooldown=0)
        async with MessageClient(settings) as client:
            result = await client.send(message())
    assert result.is_sent
    assert result.attempts == 2
    assert len(first.outbox) + len(second.outbox) == 1


async def test_round_robin_spreads_the_messages(
    dsn_settings: Callable[..., MailerSettings],
) -> None:
    """roundrobin over two relays, one message at a time: half each."""
    async with SMTPTestServer() as first, SMTPTestServer() as second:
        settings = dsn_settings(dsn("roundrobin", first, second), concurrency=1)
        async with MessageClient(settings) as client:
            await client.send_many([message(n) for n in range(6)])
    assert (len(first.outbox), len(second.outbox)) == (3, 3)


async def test_a_refused_login_on_a_relay_is_reported_not_failed_over(
    dsn_settings: Callable[..., MailerSettings],
) -> None:
    """Wrong password on relay 1: AuthenticationError naming it; relay 2 untouched."""
    async with (
        SMTPTestServer(tls="starttls", auth={"svc": "right"}) as guarded,
        SMTPTestServer() as open_relay,
    ):
        assert guarded.tls_bundle is not None
        urls = (
            f"smtp://svc:wrong@{guarded.host}:{guarded.port}"
            f"?tls=starttls&ca_file={guarded.tls_bundle.ca_path} "
            f"smtp://{open_relay.host}:{open_relay.port}?tls=none"
        )
        settings = dsn_settings(f"failover({urls})")
        async with MessageClient(settings) as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.send(message())
    assert str(caught.value).startswith(f"{guarded.address} refused the login: 535")
    assert "wrong" not in str(caught.value)
    assert open_relay.sessions_opened == 0
