"""MessageClient's retries on MockTransport: who is retried, when, and what is reported."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import pytest

from mailer import (
    AuthenticationError,
    ConnectError,
    DataRefusedError,
    Delivery,
    Message,
    MessageClient,
    RecipientsRefusedError,
    Reply,
    SendStatus,
)
from mailer.config.settings import MailerSettings
from mailer.delivery.control import SendRequest
from mailer.delivery.retry import RetryPolicy
from mailer.delivery.state import MessageAttempts
from mailer.replies import RecipientStatus
from mailer.testing import SentMail
from mailer.transports import MockTransport

OK = Reply(250, "2.0.0 queued")
FULL = Reply(452, "4.2.2 mailbox full, try later")
NO_USER = Reply(550, "5.1.1 no such user")
THREE = ["ann@example.test", "bob@example.test", "cy@example.test"]


def message(n: int = 1, to: str | list[str] | None = None) -> Message:
    return Message(to=to or f"user{n}@example.test", subject=f"Message {n}", body="b")


def lost() -> ConnectError:
    return ConnectError("smtp.example.test:25 closed the connection", transient=True)


async def test_a_452_for_one_of_three_recipients_resends_to_that_one_only(
    settings: MailerSettings,
) -> None:
    """Attempt 1 goes to three; bob is deferred; attempt 2 goes to bob alone."""

    def bob_full_once(mail: SentMail) -> Delivery:
        if len(transport.outbox) == 1:
            accepted = tuple(r for r in mail.envelope.rcpt_tos if r != THREE[1])
            return Delivery(accepted, {THREE[1]: FULL}, OK)
        return Delivery(mail.envelope.rcpt_tos, {}, OK)

    transport = MockTransport(bob_full_once)
    async with MessageClient(settings, transport=transport) as client:
        result = await client.send(message(to=THREE))
    assert [m.envelope.rcpt_tos for m in transport.outbox] == [
        tuple(THREE),
        ("bob@example.test",),
    ]
    first, second = transport.outbox
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.raw == second.raw  # the very same bytes
    assert result.status is SendStatus.SENT
    assert result.attempts == 2
    assert set(result.accepted) == set(THREE)
    assert result.refused == {}
    assert result.recipients == dict.fromkeys(THREE, RecipientStatus.ACCEPTED)


async def test_a_550_recipient_is_never_retried_and_keeps_its_reply(
    settings: MailerSettings,
) -> None:
    """One attempt: the 550 is final, reported with the server's reply."""
    transport = MockTransport(
        lambda mail: Delivery((THREE[0], THREE[2]), {THREE[1]: NO_USER}, OK)
    )
    async with MessageClient(settings, transport=transport) as client:
        result = await client.send(message(to=THREE))
    assert len(transport.outbox) == 1
    assert result.status is SendStatus.SENT
    assert result.attempts == 1
    assert result.refused == {THREE[1]: NO_USER}
    assert result.recipients[THREE[1]] is RecipientStatus.REJECTED
    line = result.to_report()
    assert line["recipients"]["bob@example.test"] == "rejected"
    assert line["refused"]["bob@example.test"] == {
        "code": 550,
        "enhanced_status": "5.1.1",
        "text": "5.1.1 no such user",
    }


async def test_a_refused_message_is_not_retried(settings: MailerSettings) -> None:
    """554 after the final dot is permanent: one attempt, then the error."""

    def spam(mail: SentMail) -> None:
        raise DataRefusedError("554 5.7.1 spam", reply=Reply(554, "5.7.1 spam"))

    transport = MockTransport(spam)
    async with MessageClient(settings, transport=transport) as client:
        with pytest.raises(DataRefusedError) as caught:
            await client.send(message())
    assert len(transport.outbox) == 1
    assert caught.value.attempts == 1
    assert caught.value.transient is False


async def test_transient_failures_are_retried_up_to_max_attempts(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """A lost connection every time: exactly MAILER_MAX_ATTEMPTS tries, same ID."""

    def always_lost(mail: SentMail) -> None:
        raise lost()

    transport = MockTransport(always_lost)
    settings = make_settings(max_attempts=4)
    async with MessageClient(settings, transport=transport) as client:
        with pytest.raises(ConnectError) as caught:
            await client.send(message())
    assert len(transport.outbox) == 4
    assert len({m.message["Message-ID"] for m in transport.outbox}) == 1
    assert caught.value.attempts == 4
    assert caught.value.transient is True
    assert caught.value.message_id == transport.outbox[0].message["Message-ID"]


async def test_a_transient_failure_then_success_is_sent(
    settings: MailerSettings,
) -> None:
    """421 then 250: sent, two attempts, the last reply kept."""
    replies = iter([RecipientsRefusedError("421", refused={}, transient=True), None])

    def flaky(mail: SentMail) -> None:
        outcome = next(replies)
        if outcome is not None:
            raise outcome

    async with MessageClient(settings, transport=MockTransport(flaky)) as client:
        result = await client.send(message())
    assert result.is_sent
    assert result.attempts == 2
    assert result.reply == Reply(250, "2.0.0 OK")


async def test_no_retry_starts_after_the_deadline(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """MAILER_SEND_DEADLINE counts from the first attempt, backoff included."""
    settings = make_settings(
        max_attempts=100, retry_backoff=0.2, retry_max_backoff=0.2, send_deadline=0.5
    )

    def always_lost(mail: SentMail) -> None:
        raise lost()

    transport = MockTransport(always_lost)
    started = time.monotonic()
    async with MessageClient(settings, transport=transport) as client:
        with pytest.raises(ConnectError):
            await client.send(message())
    assert time.monotonic() - started < 0.7
    assert 2 <= len(transport.outbox) < 100


async def test_partly_accepted_then_out_of_attempts_is_failed_not_raised(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """Ann accepted, bob deferred to the end: a failed result naming who got it."""
    settings = make_settings(max_attempts=3)

    def bob_always_full(mail: SentMail) -> Delivery:
        accepted = tuple(r for r in mail.envelope.rcpt_tos if r != THREE[1])
        if not accepted:
            raise RecipientsRefusedError(
                "452", refused={THREE[1]: FULL}, reply=FULL, transient=True
            )
        return Delivery(accepted, {THREE[1]: FULL}, OK)

    transport = MockTransport(bob_always_full)
    async with MessageClient(settings, transport=transport) as client:
        result = await client.send(message(to=THREE))
    assert len(transport.outbox) == 3
    assert [len(m.envelope.rcpt_tos) for m in transport.outbox] == [3, 1, 1]
    assert result.status is SendStatus.FAILED
    assert result.transient is True
    assert set(result.accepted) == {THREE[0], THREE[2]}
    assert result.recipients[THREE[1]] is RecipientStatus.DEFERRED
    assert result.refused == {THREE[1]: FULL}
    assert (
        result.error
        == "1 recipient(s) still deferred after 3 attempt(s): 452 4.2.2 mailbox full, try later"
    )


async def test_a_failure_after_the_dot_is_ambiguous_and_resent_with_the_same_id(
    settings: MailerSettings,
) -> None:
    """No reply after DATA: ambiguous, resent as the same bytes, counted."""
    outcomes = iter([ConnectError("lost after DATA", transient=True, ambiguous=True)])

    def lost_after_dot(mail: SentMail) -> None:
        error = next(outcomes, None)
        if error is not None:
            raise error

    transport = MockTransport(lost_after_dot)
    async with MessageClient(settings, transport=transport) as client:
        [result] = await client.send_many([message()])
    assert result.is_sent
    assert result.ambiguous is True
    assert result.attempts == 2
    assert result.to_report()["ambiguous"] is True
    first, second = transport.outbox
    assert first.raw == second.raw


class FixedDelay(RetryPolicy):
    """A policy without jitter, so a test knows when the retry comes."""

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        return self.backoff


async def test_a_waiting_retry_does_not_hold_up_the_other_messages(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """Concurrency 1: while message 1 waits 0.3 s to retry, 2-4 go out."""
    settings = make_settings(concurrency=1)
    first_try = True

    def first_fails_once(mail: SentMail) -> None:
        nonlocal first_try
        if mail.subject == "Message 1" and first_try:
            first_try = False
            raise lost()

    transport = MockTransport(first_fails_once)
    async with MessageClient(settings, transport=transport) as client:
        client.retry_policy = FixedDelay(backoff=0.3, max_backoff=0.3)
        results = await client.send_many([message(n) for n in range(1, 5)])
    assert all(r.is_sent for r in results)
    assert [m.subject for m in transport.outbox] == [
        "Message 1",
        "Message 2",
        "Message 3",
        "Message 4",
        "Message 1",
    ]
    assert [r.attempts for r in results] == [2, 1, 1, 1]


async def test_retries_wait_side_by_side_not_in_line(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """Ten messages each wait 0.2 s once, concurrency 1: the waits overlap (not 2 s)."""
    settings = make_settings(concurrency=1)
    failed: set[str] = set()

    def each_fails_once(mail: SentMail) -> None:
        if mail.subject not in failed:
            failed.add(mail.subject)
            raise lost()

    transport = MockTransport(each_fails_once)
    started = time.monotonic()
    async with MessageClient(settings, transport=transport) as client:
        client.retry_policy = FixedDelay(backoff=0.2, max_backoff=0.2)
        results = await client.send_many([message(n) for n in range(10)])
    elapsed = time.monotonic() - started
    assert all(r.is_sent and r.attempts == 2 for r in results)
    assert elapsed < 1.0  # in line, the waits alone would take 2.0 s


async def test_a_refused_login_stops_the_batch_after_one_attempt(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """535: one login tried, not one per message; the rest end pending, reported."""
    settings = make_settings(concurrency=5)

    def bad_password(mail: SentMail) -> None:
        raise AuthenticationError(
            "smtp.example.test:587 refused the login: 535 5.7.8 bad credentials",
            reply=Reply(535, "5.7.8 bad credentials"),
        )

    transport = MockTransport(bad_password)
    async with MessageClient(settings, transport=transport) as client:
        results = await client.send_many([message(n) for n in range(20)])
    assert len(transport.outbox) == 1
    assert [r.status for r in results].count(SendStatus.FAILED) == 1
    assert [r.status for r in results].count(SendStatus.PENDING) == 19
    failed = next(r for r in results if r.status is SendStatus.FAILED)
    assert failed.reply == Reply(535, "5.7.8 bad credentials")
    pending = [r for r in results if r.status is SendStatus.PENDING]
    assert all(
        r.error is not None and "refused the login: 535" in r.error for r in pending
    )
    assert {r.to for r in results} == {(f"user{n}@example.test",) for n in range(20)}


async def test_a_refused_login_is_not_retried_by_send(settings: MailerSettings) -> None:
    """send() raises AuthenticationError after one attempt, not max_attempts."""

    def bad_password(mail: SentMail) -> None:
        raise AuthenticationError("535", reply=Reply(535, "5.7.8 no"))

    transport = MockTransport(bad_password)
    async with MessageClient(settings, transport=transport) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.send(message())
    assert len(transport.outbox) == 1
    assert caught.value.attempts == 1


async def test_stop_ends_waiting_messages_pending_and_lets_in_flight_finish(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """After stop: the attempt in flight completes; queued ones end pending."""
    settings = make_settings(concurrency=2, shutdown_grace=5)
    stop = asyncio.Event()
    started = asyncio.Event()

    async def slow(mail: SentMail) -> None:
        started.set()
        await asyncio.sleep(0.2)

    transport = MockTransport(slow)

    async def press_ctrl_c() -> None:
        await started.wait()
        stop.set()

    async with MessageClient(settings, transport=transport) as client:
        results, _ = await asyncio.gather(
            client.send_many([message(n) for n in range(50)], stop=stop),
            press_ctrl_c(),
        )
    statuses = [r.status for r in results]
    assert len(results) == 50
    # The gate lets one attempt run first; it was in flight and finished.
    assert statuses.count(SendStatus.SENT) == len(transport.outbox) >= 1
    assert statuses.count(SendStatus.PENDING) == 50 - len(transport.outbox)
    assert all(
        r.error is not None and "interrupted" in r.error
        for r in results
        if r.status is SendStatus.PENDING
    )


async def test_after_the_grace_period_attempts_in_flight_are_abandoned(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """A hung attempt is cut after MAILER_SHUTDOWN_GRACE and reported pending, ambiguous."""
    settings = make_settings(concurrency=1, shutdown_grace=0.1)
    stop = asyncio.Event()

    async def hang(mail: SentMail) -> None:
        stop.set()
        await asyncio.sleep(30)

    started = time.monotonic()
    async with MessageClient(settings, transport=MockTransport(hang)) as client:
        results = await client.send_many([message(1), message(2)], stop=stop)
    assert time.monotonic() - started < 2
    assert [r.status for r in results] == [SendStatus.PENDING, SendStatus.PENDING]
    assert results[0].ambiguous is True
    assert results[1].ambiguous is False
    assert results[1].attempts == 0


async def test_a_send_request_keeps_its_message_id_and_recipients(
    settings: MailerSettings,
) -> None:
    """SendRequest: the given Message-ID is reused, only the given recipients get it."""
    transport = MockTransport(lambda mail: None)
    request = SendRequest(
        message(to=THREE),
        message_id="<resend-1@example.test>",
        recipients=("cy@example.test",),
    )
    async with MessageClient(settings, transport=transport) as client:
        [result] = await client.send_many([request])
    [sent] = transport.outbox
    assert sent.message["Message-ID"] == "<resend-1@example.test>"
    assert sent.envelope.rcpt_tos == ("cy@example.test",)
    assert result.accepted == ("cy@example.test",)


async def test_an_observer_that_fails_stops_the_batch_before_sending(
    settings: MailerSettings,
) -> None:
    """A journal that cannot be written: nothing is sent that it cannot record."""

    class BrokenJournal:
        async def attempt_starting(self, attempts: MessageAttempts, /) -> None:
            raise OSError("disk full")

        async def attempt_ended(
            self, attempts: MessageAttempts, /, *, retry_in: float | None
        ) -> None:
            raise AssertionError("never reached")

    transport = MockTransport(lambda mail: None)
    requests = [SendRequest(message(n), observer=BrokenJournal()) for n in range(5)]
    async with MessageClient(settings, transport=transport) as client:
        results = await client.send_many(requests)
    assert transport.outbox == []
    assert results[0].status is SendStatus.FAILED
    assert results[0].error == "OSError: disk full"
    assert [r.status for r in results[1:]] == [SendStatus.PENDING] * 4
