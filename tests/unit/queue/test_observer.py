"""How one attempt's outcome becomes a queued message's state (no database)."""

from __future__ import annotations

import pytest

from mailer import Message
from mailer.bulk.journal import JournalEntry, JournalState
from mailer.content.addresses import Address
from mailer.delivery.client import OutgoingMessage
from mailer.delivery.retry import RetryPolicy
from mailer.delivery.state import MessageAttempts
from mailer.exceptions import (
    AuthenticationError,
    ConnectError,
    RecipientsRefusedError,
)
from mailer.queue.observer import settle
from mailer.replies import RecipientStatus, Reply
from mailer.transports.base import Delivery

SENDER = Address.parse("shop@example.test", field="sender")
POLICY = RetryPolicy(max_attempts=3, backoff=10, max_backoff=10, deadline=300)


def attempts_for(*recipients: str) -> MessageAttempts:
    message = Message(to=list(recipients), subject="s", body="b")
    outgoing = OutgoingMessage(message, message.envelope(SENDER), b"x", "<id@x>")
    attempts = MessageAttempts(outgoing)
    attempts.begin()
    return attempts


def entry() -> JournalEntry:
    return JournalEntry(position=1, line=0, email="a@x", state=JournalState.SENDING)


def test_an_accepted_message_is_sent_with_no_retry() -> None:
    """250 for everyone: sent, no retry job."""
    attempts = attempts_for("a@example.test")
    attempts.record_delivery(Delivery(("a@example.test",), {}, Reply(250, "2.0.0 ok")))
    state = entry()
    assert settle(state, attempts, total_attempts=1, elapsed=0, policy=POLICY) is None
    assert state.state is JournalState.SENT
    assert state.error is None


def test_a_transient_failure_is_deferred_with_the_policy_s_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 4xx defers: the delay comes from MAILER_RETRY_* and the total attempts."""
    attempts = attempts_for("a@example.test")
    attempts.record_error(
        RecipientsRefusedError(
            "no", refused={"a@example.test": Reply(451, "4.7.1 later")}
        )
    )
    state = entry()
    delay = settle(state, attempts, total_attempts=1, elapsed=0, policy=POLICY)
    assert delay is not None
    assert 0 <= delay <= 10
    assert state.state is JournalState.DEFERRED
    assert state.transient
    assert state.recipients == {"a@example.test": RecipientStatus.DEFERRED}


def test_the_last_allowed_attempt_ends_failed_and_transient() -> None:
    """MAILER_MAX_ATTEMPTS counts attempts across jobs: the third 4xx is final."""
    attempts = attempts_for("a@example.test")
    attempts.record_error(ConnectError("dropped", transient=True))
    state = entry()
    assert settle(state, attempts, total_attempts=3, elapsed=5, policy=POLICY) is None
    assert state.state is JournalState.FAILED
    assert state.transient
    assert "dropped" in (state.error or "")


def test_the_deadline_ends_retries_too() -> None:
    """No retry once MAILER_SEND_DEADLINE would pass before it."""
    attempts = attempts_for("a@example.test")
    attempts.record_error(ConnectError("dropped", transient=True))
    state = entry()
    policy = RetryPolicy(max_attempts=10, backoff=1, max_backoff=1, deadline=60)
    assert settle(state, attempts, total_attempts=1, elapsed=60, policy=policy) is None
    assert state.state is JournalState.FAILED


def test_a_permanent_refusal_fails_at_once() -> None:
    """A 5xx for everyone: failed, not transient, the reply kept."""
    attempts = attempts_for("a@example.test")
    reply = Reply(550, "5.1.1 unknown")
    attempts.record_error(
        RecipientsRefusedError("no", refused={"a@example.test": reply}, reply=reply)
    )
    state = entry()
    assert settle(state, attempts, total_attempts=1, elapsed=0, policy=POLICY) is None
    assert state.state is JournalState.FAILED
    assert not state.transient
    assert state.replies == {"a@example.test": reply}


def test_a_partial_refusal_is_sent_for_the_accepted_and_keeps_the_refusal() -> None:
    """One accepted, one 550: sent, the 550 recorded for its recipient."""
    attempts = attempts_for("a@example.test", "b@example.test")
    reply = Reply(550, "5.1.1 unknown")
    attempts.record_delivery(
        Delivery(("a@example.test",), {"b@example.test": reply}, Reply(250, "ok"))
    )
    state = entry()
    assert settle(state, attempts, total_attempts=1, elapsed=0, policy=POLICY) is None
    assert state.state is JournalState.SENT
    assert state.recipients == {
        "a@example.test": RecipientStatus.ACCEPTED,
        "b@example.test": RecipientStatus.REJECTED,
    }


def test_a_refused_login_leaves_the_message_pending_for_its_job() -> None:
    """A fatal error (535) says nothing about the message: pending, no retry job."""
    attempts = attempts_for("a@example.test")
    attempts.record_error(AuthenticationError("535 no", reply=Reply(535, "no")))
    state = entry()
    assert settle(state, attempts, total_attempts=1, elapsed=0, policy=POLICY) is None
    assert state.state is JournalState.PENDING
    assert "535" in (state.error or "")


def test_earlier_recipients_are_kept_and_an_ambiguous_attempt_sticks() -> None:
    """A retry to the deferred one keeps who accepted before; ambiguity accumulates."""
    attempts = attempts_for("b@example.test")
    attempts.record_delivery(Delivery(("b@example.test",), {}, Reply(250, "ok")))
    state = entry()
    state.recipients = {"a@example.test": RecipientStatus.ACCEPTED}
    state.ambiguous = True
    assert settle(state, attempts, total_attempts=2, elapsed=1, policy=POLICY) is None
    assert state.state is JournalState.SENT
    assert state.ambiguous
    assert state.attempts == 2
    assert set(state.recipients) == {"a@example.test", "b@example.test"}
