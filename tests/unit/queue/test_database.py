"""The queue's DSN: required where used, a secret everywhere, errors on one line."""

from __future__ import annotations

import pytest

from mailer import ConfigError, MailerSettings
from mailer.queue.database import queue_dsn, scrub, secrets_of
from mailer.queue.tasks import DeliveryIncompleteError, IncompleteRetryStrategy

DSN = "postgresql://mailer:s%40cret@db.example.test:5432/app"


def test_queue_dsn_is_required_where_the_queue_is_used() -> None:
    """No MAILER_QUEUE_DSN: a ConfigError naming the key and what to set."""
    with pytest.raises(ConfigError, match="MAILER_QUEUE_DSN: not set") as caught:
        queue_dsn(MailerSettings(_env_file=None))
    assert caught.value.key == "MAILER_QUEUE_DSN"


def test_a_dsn_that_is_not_postgres_is_refused_without_echoing_it() -> None:
    """A mysql:// URL is an error naming the key; its password is not in it."""
    with pytest.raises(ConfigError, match="MAILER_QUEUE_DSN") as caught:
        MailerSettings(_env_file=None, queue_dsn="mysql://u:hunter2@db/app")
    assert "hunter2" not in str(caught.value)


def test_the_dsn_is_hidden_in_the_settings_repr() -> None:
    """SecretStr: repr(settings) never shows the password."""
    settings = MailerSettings(_env_file=None, queue_dsn=DSN)
    assert "s%40cret" not in repr(settings)
    assert queue_dsn(settings) == DSN


def test_scrub_removes_the_password_in_both_spellings_and_joins_lines() -> None:
    """A driver message quoting the DSN or its password shows neither."""
    assert secrets_of(DSN) == ["s%40cret", "s@cret"]
    text = f"failed for {DSN}\npassword s@cret rejected; raw s%40cret"
    cleaned = scrub(text, DSN)
    assert "s@cret" not in cleaned
    assert "s%40cret" not in cleaned
    assert "\n" not in cleaned
    assert "[MAILER_QUEUE_DSN]" in cleaned


class _Job:
    def __init__(self, attempts: int) -> None:
        self.attempts = attempts


def test_an_incomplete_job_comes_back_when_it_asks() -> None:
    """DeliveryIncompleteError(retry_in=0): the job is due again at once."""
    strategy = IncompleteRetryStrategy()
    decision = strategy.get_retry_decision(
        exception=DeliveryIncompleteError("stopping", retry_in=0),
        job=_Job(50),  # type: ignore[arg-type]
    )
    assert decision is not None
    assert decision.retry_at is not None


def test_an_unexpected_error_backs_off_then_gives_up() -> None:
    """A bug or a database error: retried with growing waits, up to 20 times."""
    strategy = IncompleteRetryStrategy()
    first = strategy.get_retry_decision(exception=RuntimeError(), job=_Job(1))  # type: ignore[arg-type]
    later = strategy.get_retry_decision(exception=RuntimeError(), job=_Job(8))  # type: ignore[arg-type]
    assert first is not None
    assert later is not None
    assert first.retry_at is not None
    assert later.retry_at is not None
    assert later.retry_at > first.retry_at
    assert strategy.get_retry_decision(exception=RuntimeError(), job=_Job(20)) is None  # type: ignore[arg-type]


async def test_without_the_extra_enqueueing_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No procrastinate installed: a one-line ConfigError with the pip command."""
    import sys

    from mailer import Message
    from mailer.queue import send_later

    monkeypatch.setitem(sys.modules, "procrastinate", None)  # import fails
    settings = MailerSettings(_env_file=None, queue_dsn=DSN, from_="shop@example.test")
    message = Message(to="a@example.test", subject="s", body="b")
    with pytest.raises(ConfigError, match=r"pip install 'aiomailer\[queue\]'"):
        await send_later(message, settings=settings)
