"""The retry rules: which replies are transient, the backoff, the attempt budget."""

from __future__ import annotations

import random

import pytest

from mailer import (
    AuthenticationError,
    ConnectError,
    DataRefusedError,
    DeliveryTimeoutError,
    RejectedError,
    Reply,
    TLSError,
)
from mailer.config.settings import MailerSettings
from mailer.delivery.retry import RetryPolicy
from mailer.replies import (
    RecipientStatus,
    Verdict,
    classify_error,
    classify_reply,
    is_transient_reply,
)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (421, "4.7.0 try again later"),
        (450, "4.2.1 mailbox busy"),
        (451, "4.3.0 local error"),
        (452, "4.5.3 too many recipients"),
        (454, "4.7.0 TLS not available"),
        (-1, "Malformed SMTP response line"),
    ],
)
def test_4xx_and_malformed_replies_are_transient(code: int, text: str) -> None:
    """421/450/451/452/454 and an unparsable reply defer the recipient."""
    assert is_transient_reply(Reply(code, text))
    assert classify_reply(Reply(code, text)) is RecipientStatus.DEFERRED


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.1.1 no such user"),
        (553, "5.1.3 bad address"),
        (554, "5.7.1 relay denied"),
        (552, "4.2.2 mailbox full"),  # the basic code decides: 5xx is final
        (552, "5.2.2 mailbox full"),
        (552, "mailbox full"),
    ],
)
def test_5xx_replies_are_permanent(code: int, text: str) -> None:
    """Any 5xx rejects the recipient for good, whatever the enhanced status says."""
    assert not is_transient_reply(Reply(code, text))
    assert classify_reply(Reply(code, text)) is RecipientStatus.REJECTED


@pytest.mark.parametrize(
    "text",
    ["5.5.3 Too many recipients", "Too many recipients, try the rest later"],
)
def test_a_552_too_many_recipients_defers_the_recipient(text: str) -> None:
    """RFC 5321 4.5.3.1.10: the RFC 821 code for a full transaction is temporary."""
    assert classify_reply(Reply(552, text)) is RecipientStatus.DEFERRED


def test_only_552_with_5_5_3_counts_as_too_many_recipients() -> None:
    """Another code or enhanced status with the same words stays final."""
    assert classify_reply(Reply(550, "5.5.3 Too many recipients")) is (
        RecipientStatus.REJECTED
    )
    assert classify_reply(Reply(552, "5.2.2 too many recipients? no: full")) is (
        RecipientStatus.REJECTED
    )


def test_an_unexpected_reply_is_transient() -> None:
    """A 250 where 354 was due, or a 999: out of step, so retried on a new connection."""
    assert is_transient_reply(Reply(250, "2.0.0 ok"))
    assert is_transient_reply(Reply(999, "what"))
    assert classify_error(RejectedError("answered 250", reply=Reply(250, "ok"))) is (
        Verdict.TRANSIENT
    )


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (AuthenticationError("535 bad credentials"), Verdict.FATAL),
        (TLSError("certificate not trusted"), Verdict.FATAL),
        (ConnectError("connection lost", transient=True), Verdict.TRANSIENT),
        (DeliveryTimeoutError("no answer", transient=True), Verdict.TRANSIENT),
        (RejectedError("451 later", transient=True), Verdict.TRANSIENT),
        (DataRefusedError("554 spam"), Verdict.PERMANENT),
        (RuntimeError("a bug"), Verdict.PERMANENT),
    ],
)
def test_errors_are_classified(error: BaseException, verdict: Verdict) -> None:
    """Login/TLS failures stop the batch, transient errors retry, the rest are final."""
    assert classify_error(error) is verdict


class TopOfRange(random.Random):
    """A 'random' source that always picks the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_the_backoff_cap_doubles_up_to_the_maximum() -> None:
    """Caps 1, 2, 4, 8, ... seconds, never above max_backoff."""
    policy = RetryPolicy(max_attempts=100, backoff=1, max_backoff=60, deadline=1e9)
    caps = [policy.delay(n, TopOfRange()) for n in range(1, 10)]
    assert caps == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert policy.delay(10_000, TopOfRange()) == 60


def test_the_jitter_is_full_between_zero_and_the_cap() -> None:
    """Full jitter: delays spread over [0, cap], not bunched near the cap."""
    policy = RetryPolicy(backoff=1, max_backoff=60)
    rng = random.Random(7)  # noqa: S311 - jitter, not secrets
    delays = [policy.delay(3, rng) for _ in range(2000)]
    assert all(0 <= d <= 4 for d in delays)
    assert min(delays) < 0.1
    assert max(delays) > 3.9
    assert 1.8 < sum(delays) / len(delays) < 2.2


def test_no_retry_after_the_last_attempt() -> None:
    """max_attempts counts the first attempt: 3 means two retries at most."""
    policy = RetryPolicy(max_attempts=3, backoff=1, max_backoff=1, deadline=1e9)
    assert policy.next_delay(1, elapsed=0) is not None
    assert policy.next_delay(2, elapsed=0) is not None
    assert policy.next_delay(3, elapsed=0) is None


def test_no_retry_that_would_start_after_the_deadline() -> None:
    """A retry whose wait would cross the deadline is not scheduled."""
    policy = RetryPolicy(max_attempts=10, backoff=4, max_backoff=4, deadline=10)
    assert policy.next_delay(1, elapsed=5.9, rng=TopOfRange()) == 4
    assert policy.next_delay(1, elapsed=6.0, rng=TopOfRange()) is None
    assert policy.next_delay(1, elapsed=10.5) is None


def test_the_policy_comes_from_the_settings() -> None:
    """MAILER_MAX_ATTEMPTS, _RETRY_BACKOFF, _RETRY_MAX_BACKOFF, _SEND_DEADLINE."""
    settings = MailerSettings(
        _env_file=None,
        max_attempts=7,
        retry_backoff=0.5,
        retry_max_backoff=30,
        send_deadline=120,
    )
    assert RetryPolicy.from_settings(settings) == RetryPolicy(7, 0.5, 30, 120)
    assert RetryPolicy.from_settings(MailerSettings(_env_file=None)) == RetryPolicy(
        5, 1.0, 60.0, 300.0
    )
