"""A failure every message would hit stops a batch after its first attempt (issue 12.6)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

import aiosmtplib
import pytest

from mailer import (
    AuthenticationError,
    ConnectError,
    Delivery,
    DeliveryError,
    DeliveryTimeoutError,
    Message,
    MessageClient,
    RecipientsRefusedError,
    Reply,
    SenderRefusedError,
    SendStatus,
    TLSError,
)
from mailer.config.settings import MailerSettings
from mailer.exceptions import RelaysUnavailableError
from mailer.replies import Misconfiguration, misconfiguration
from mailer.testing import SentMail
from mailer.transports import MockTransport

SERVER = "smtp.example.test:2525"


def refused() -> ConnectError:
    """What the transport raises when nothing listens on the port."""
    error = ConnectError(f"cannot reach {SERVER}: Connection refused", transient=True)
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return error


def unknown_host() -> ConnectError:
    error = ConnectError(f"cannot reach {SERVER}: Name or service not known")
    error.__cause__ = socket.gaierror(-2, "Name or service not known")
    error.transient = True
    return error


def no_greeting() -> DeliveryTimeoutError:
    """The greeting timed out: aiosmtplib's connect timeout is the cause."""
    error = DeliveryTimeoutError(f"timed out connecting to {SERVER}", transient=True)
    error.__cause__ = aiosmtplib.SMTPConnectTimeoutError("Timed out connecting")
    return error


def starttls_required() -> SenderRefusedError:
    reply = Reply(530, "5.7.0 Must issue a STARTTLS command first")
    return SenderRefusedError(f"{SERVER} refused the sender: {reply}", reply=reply)


def login_required() -> SenderRefusedError:
    reply = Reply(530, "5.7.0 Authentication required")
    return SenderRefusedError(f"{SERVER} refused the sender: {reply}", reply=reply)


def greeting_refused() -> ConnectError:
    reply = Reply(554, "5.7.1 no SMTP service for you")
    return ConnectError(f"{SERVER} refused the connection: {reply}", reply=reply)


def not_smtp() -> ConnectError:
    reply = Reply(-1, "SSH-2.0-OpenSSH_9.2")
    return ConnectError(f"{SERVER} refused the connection: {reply}", reply=reply)


KINDS: dict[str, tuple[Callable[[], DeliveryError], Misconfiguration, str]] = {
    "connection refused": (
        refused,
        Misconfiguration.UNREACHABLE,
        "check MAILER_SMTP_HOST and MAILER_SMTP_PORT",
    ),
    "unknown host": (
        unknown_host,
        Misconfiguration.UNREACHABLE,
        "check MAILER_SMTP_HOST and MAILER_SMTP_PORT",
    ),
    "no greeting (wrong port or TLS mode)": (
        no_greeting,
        Misconfiguration.NOT_SMTP,
        "check MAILER_SMTP_PORT and MAILER_SMTP_TLS",
    ),
    "a greeting that is not SMTP": (
        not_smtp,
        Misconfiguration.NOT_SMTP,
        "check MAILER_SMTP_PORT and MAILER_SMTP_TLS",
    ),
    "530 STARTTLS required": (
        starttls_required,
        Misconfiguration.STARTTLS_REQUIRED,
        "set MAILER_SMTP_TLS=starttls",
    ),
    "530 authentication required": (
        login_required,
        Misconfiguration.LOGIN_REQUIRED,
        "set MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD",
    ),
    "554 at the greeting": (
        greeting_refused,
        Misconfiguration.CLIENT_REFUSED,
        "check MAILER_SMTP_HOST",
    ),
}


def no_starttls() -> TLSError:
    return TLSError(f"{SERVER} does not offer STARTTLS")


def bad_certificate() -> TLSError:
    error = TLSError(f"TLS with {SERVER} failed: certificate not trusted")
    error.__cause__ = ssl.SSLCertVerificationError(1, "self-signed certificate")
    return error


def no_auth_offered() -> AuthenticationError:
    return AuthenticationError(f"{SERVER} offers no AUTH before TLS; cannot log in")


def login_refused() -> AuthenticationError:
    reply = Reply(535, "5.7.8 Authentication credentials invalid")
    return AuthenticationError(f"{SERVER} refused the login: {reply}", reply=reply)


KINDS.update(
    {
        "no STARTTLS offered": (
            no_starttls,
            Misconfiguration.NO_STARTTLS,
            "set MAILER_SMTP_TLS=none",
        ),
        "certificate refused": (
            bad_certificate,
            Misconfiguration.TLS,
            "check MAILER_SMTP_TLS (and MAILER_SMTP_CA_FILE",
        ),
        "no AUTH offered": (
            no_auth_offered,
            Misconfiguration.NO_LOGIN,
            "leave MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD empty",
        ),
        "535 login refused": (
            login_refused,
            Misconfiguration.LOGIN_REFUSED,
            "check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD",
        ),
    }
)


def messages(count: int) -> list[Message]:
    return [
        Message(to=f"user{n}@example.test", subject=f"Message {n}", body="b")
        for n in range(count)
    ]


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
def test_each_configuration_failure_is_recognised(
    kind: tuple[Callable[[], DeliveryError], Misconfiguration, str],
) -> None:
    """replies.misconfiguration names what every message would hit."""
    make, expected, _ = kind
    assert misconfiguration(make()) is expected


@pytest.mark.parametrize(
    "error",
    [
        ConnectError(f"{SERVER} closed the connection", transient=True),
        ConnectError(
            f"{SERVER} refused the connection: 421",
            reply=Reply(421, "4.3.2 busy"),
            transient=True,
        ),
        DeliveryTimeoutError(f"{SERVER} did not answer in time", transient=True),
        SenderRefusedError("refused", reply=Reply(553, "5.7.1 not your address")),
        RecipientsRefusedError(
            "refused", refused={}, reply=Reply(550, "5.1.1 no such user")
        ),
    ],
    ids=["dropped", "421 busy", "command timeout", "553 sender", "550 recipient"],
)
def test_failures_about_the_message_or_a_busy_server_are_not(
    error: DeliveryError,
) -> None:
    """A busy server, a dropped line or a refused address is not a configuration error."""
    assert misconfiguration(error) is None


def test_a_failover_list_is_misconfigured_only_when_every_relay_is() -> None:
    """Every relay refused the connection: unreachable; one merely busy: not."""
    assert (
        misconfiguration(RelaysUnavailableError({"a:25": refused(), "b:25": refused()}))
        is Misconfiguration.UNREACHABLE
    )
    busy = ConnectError("closed", transient=True)
    assert misconfiguration(RelaysUnavailableError({"a": refused(), "b": busy})) is None


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
async def test_a_batch_stops_after_one_attempt_the_rest_pending(
    make_settings: Callable[..., MailerSettings],
    kind: tuple[Callable[[], DeliveryError], Misconfiguration, str],
) -> None:
    """20 messages, 5 attempts each allowed: one attempt, 1 failed, 19 pending with the hint."""
    make, _, hint = kind

    def fail(mail: SentMail) -> Delivery:
        raise make()

    transport = MockTransport(fail)
    async with MessageClient(
        make_settings(max_attempts=5), transport=transport
    ) as client:
        results = await client.send_many(messages(20))
    assert len(transport.outbox) == 1
    statuses = [result.status for result in results]
    assert statuses.count(SendStatus.FAILED) == 1
    assert statuses.count(SendStatus.PENDING) == 19
    pending = next(r for r in results if r.status is SendStatus.PENDING)
    assert pending.error is not None
    assert pending.error.startswith(
        "not sent: stopped: every message would fail the same way: "
    )
    assert hint in pending.error


async def test_the_hint_names_the_dsn_when_it_gave_the_relays(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """With MAILER_DSN, the hint says what to change in it."""

    def fail(mail: SentMail) -> Delivery:
        raise starttls_required()

    settings = make_settings(dsn="smtp://127.0.0.1:2525")
    async with MessageClient(settings, transport=MockTransport(fail)) as client:
        results = await client.send_many(messages(3))
    assert "add ?tls=starttls to the relay in MAILER_DSN" in str(results[1].error)


async def test_a_refused_connection_after_a_success_is_retried(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """Once a message went through, a refused connection is a restart: retried, not a stop."""
    calls = 0

    def flaky(mail: SentMail) -> Delivery | None:
        nonlocal calls
        calls += 1
        if calls in (2, 3):
            raise refused()
        return None

    transport = MockTransport(flaky)
    settings = make_settings(max_attempts=5, concurrency=1)
    async with MessageClient(settings, transport=transport) as client:
        results = await client.send_many(messages(4))
    assert [r.status for r in results] == [SendStatus.SENT] * 4
    assert len(transport.outbox) == 6


async def test_a_single_send_still_retries_a_refused_connection(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """send() on its own is not a batch: a server restarting gets its retries."""
    transport = MockTransport(lambda mail: (_ for _ in ()).throw(refused()))
    async with MessageClient(
        make_settings(max_attempts=3), transport=transport
    ) as client:
        with pytest.raises(ConnectError):
            await client.send(messages(1)[0])
    assert len(transport.outbox) == 3


async def test_a_tls_failure_still_stops_the_batch(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """TLS and login failures stay fatal after a success too, with their hint."""
    calls = 0

    def fail_after_one(mail: SentMail) -> Delivery | None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise bad_certificate()
        return None

    settings = make_settings(concurrency=1)
    async with MessageClient(
        settings, transport=MockTransport(fail_after_one)
    ) as client:
        results = await client.send_many(messages(4))
    statuses = [r.status for r in results]
    assert statuses[0] is SendStatus.SENT
    assert statuses.count(SendStatus.PENDING) >= 1
    pending = next(r for r in results if r.status is SendStatus.PENDING)
    assert "check MAILER_SMTP_TLS" in str(pending.error)
