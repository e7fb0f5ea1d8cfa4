"""Public-API usage that only mypy checks: the types users see must line up."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import mailer
from mailer import (
    BatchReport,
    CheckSummary,
    DuplicateRow,
    InvalidRow,
    MailerSettings,
    Message,
    MessageClient,
    RecipientStatus,
    RetryPolicy,
    SendRequest,
    SendResult,
    generate_message_client,
    render,
    render_string,
    send_messages,
    stream_messages,
)
from mailer.testing import (
    END_OF_DATA,
    Addr,
    AnyOf,
    Contains,
    FaultRule,
    InboxClient,
    Mail,
    Not,
    Outbox,
    Regex,
    SentMail,
    SMTPTestServer,
    ThreadedSMTPTestServer,
    capture_mail,
    isolated_settings,
    patch_send,
)
from mailer.transports import MemoryTransport, Transport


async def send_one() -> SendResult:
    settings = MailerSettings(_env_file=None, from_="a@example.test")
    transport: Transport = MemoryTransport()
    async with MessageClient(settings, transport=transport) as client:
        message = Message(
            to=["a@example.test"], subject="s", body="b", headers={"X-A": "1"}
        )
        return await client.send(message)


async def send_batch() -> BatchReport:
    client = generate_message_client()
    stop = asyncio.Event()
    async with client:
        results: list[SendResult] = await client.send_many([], stop=stop)
        again = SendRequest(
            Message(to="a@example.test", subject="s", body="b"),
            message_id="<1@example.test>",
            recipients=("a@example.test",),
        )
        resent: list[SendResult] = await client.send_many([again])
        statuses: dict[str, RecipientStatus] = dict(resent[0].recipients)
        attempts: int = resent[0].attempts
        ambiguous: bool = resent[0].ambiguous
        assert statuses or attempts or ambiguous
    assert not results
    client.retry_policy = RetryPolicy(max_attempts=3, backoff=0.5)
    return await send_messages(
        "welcome",
        [{"email": "a@example.test", "name": "A"}],
        journal=Path("batch.journal"),
        stop=stop,
        templates_dir="templates",
    )


def render_one() -> Message:
    return render("welcome", to="a@example.test", context={"name": "A"})


async def stream_batch(
    messages: AsyncIterator[Message],
) -> list[tuple[int, SendResult]]:
    async with MessageClient(MailerSettings(_env_file=None)) as client:
        return [pair async for pair in client.stream(messages)]


async def stream_rows() -> int:
    failed = 0
    async for line, outcome in stream_messages("welcome", [{"email": "a@x.test"}]):
        if isinstance(outcome, InvalidRow) or not outcome.is_sent:
            failed += line > 0
    return failed


async def stream_rows_once_per_address() -> tuple[int, int]:
    repeats: list[CheckSummary] = []
    skipped = 0
    rows = [{"email": "a@x.test"}, {"email": "A@x.test"}]
    async for _line, outcome in stream_messages(
        "welcome", rows, dedupe=True, on_checked=repeats.append
    ):
        if isinstance(outcome, DuplicateRow):
            skipped += outcome.email != ""
    return skipped, repeats[0].repeated


# -- mailer.testing: the toolkit's types, as users write them ------------------


async def use_the_test_server() -> list[SentMail]:
    async with SMTPTestServer(tls="starttls", auth={"svc": "pw"}) as server:
        rule: FaultRule = server.faults.reply("MAIL", 451, "4.7.1 Later", times=1)
        server.faults.reply(END_OF_DATA, 552, recipient=None)
        server.faults.delay("RCPT", 0.5, recipient="a@example.test")
        server.faults.disconnect(after="DATA")
        server.faults.chaos(seed=1, rate=0.1)
        settings: MailerSettings = server.settings(concurrency=1)
        async with MessageClient(settings) as client:
            await client.send(Message(to="a@example.test", subject="s", body="b"))
        assert rule.fired == 1
        return await server.outbox.wait_for(Mail(subject=Contains("s")), timeout=1)


def use_matchers_and_outboxes(outbox: Outbox) -> SentMail:
    outbox.assert_sent(to=Addr("a@example.test"), subject=Regex("^Re"), count=1)
    outbox.assert_not_sent(Mail(bcc=AnyOf("x@example.test", Not("y@example.test"))))
    outbox.assert_sent_count(1)
    with outbox.capture() as captured:
        pass
    assert captured == []
    envelope: tuple[str, tuple[str, ...]] = (
        outbox.last.mail_from,
        outbox.last.rcpt_tos,
    )
    assert envelope
    return outbox.one(lambda mail: mail.subject == "s")


async def use_the_fakes() -> Outbox:
    with capture_mail() as outbox, patch_send(outbox) as send:
        send.assert_not_awaited()
        settings = isolated_settings(from_="a@example.test")
        async with generate_message_client(settings) as client:
            await client.send(Message(to="b@example.test", subject="s", body="b"))
    return outbox


def use_the_threaded_server() -> int:
    with ThreadedSMTPTestServer() as server:
        return len(server.outbox.wait_for_blocking(count=0, timeout=0.1))


def render_untrusted(source: str) -> Message:
    return render_string("Hi", source, trusted=False, to="a@example.test")


def use_content_features(mail: SentMail) -> Message:
    from pathlib import Path

    from mailer import Attachment, RowAttachments, Unsubscribe
    from mailer.testing import Attachment as AttachmentMatcher
    from mailer.testing import make_dkim_key, verify_dkim

    pdf = Attachment(b"%PDF", filename="a.pdf", content_type="application/pdf")
    logo = Attachment.from_path(
        Path("logo.png"), disposition="inline", content_id="logo@example.test"
    )
    files = RowAttachments.from_paths([Path("terms.pdf")], column="files")
    assert files.common
    assert mail == Mail(attachments=[AttachmentMatcher(filename="a.pdf", size=4)])
    info = mail.dkim
    if info is not None:
        assert info.domain
    _, record = make_dkim_key("ed25519")
    assert verify_dkim(mail, record).selector
    return Message(
        to="a@example.test",
        subject="s",
        body="b",
        attachments=[pdf, logo],
        unsubscribe=Unsubscribe(url="https://example.test/u"),
    )


# -- issue 17: hooks, rate limits, telemetry ---------------------------------


def suppress(message: mailer.Message) -> mailer.Message | mailer.Refuse:
    if message.to[0].addr_spec.endswith("@blocked.example"):
        return mailer.Refuse("suppressed")
    return dataclasses.replace(
        message, headers=(*message.headers, ("X-Campaign", "spring"))
    )


async def record(message: mailer.Message, result: mailer.SendResult) -> None:
    assert result.status in mailer.SendStatus


async def use_hooks(settings: mailer.MailerSettings) -> mailer.BatchReport:
    hooks = mailer.Hooks(before_send=[suppress], after_send=[record])
    client = mailer.MessageClient(settings, hooks=hooks)
    client.hooks.before_send(suppress)
    client.hooks.after_send(lambda message, result: None)
    try:
        await client.send(mailer.Message(to="a@example.test", subject="s", body="b"))
    except mailer.RefusedByHookError as exc:
        print(exc.reason, exc.hook)  # noqa: T201 - a typed use of the attributes
    return await mailer.send_messages("welcome", [], settings=settings, hooks=hooks)


async def use_a_rate_limiter() -> bool:
    limiter: mailer.RateLimiter = mailer.LocalRateLimiter(
        mailer.RateLimit(50, 1.0, burst=5), cooldown=30, name="smtp.example.com:587"
    )
    await limiter.wait_ready()
    return limiter.try_acquire()


def limiter_per_relay(settings: mailer.MailerSettings) -> mailer.MessageClient:
    def limiter(relay: mailer.MailerSettings) -> mailer.RateLimiter:
        return mailer.LocalRateLimiter(relay.rate, name=f"{relay.smtp_host}")

    return mailer.generate_message_client(settings, limiters=limiter)


async def use_the_inbox_client() -> list[SentMail]:
    inbox = InboxClient("http://127.0.0.1:8025", timeout=5)
    await inbox.clear()
    outbox: Outbox = await inbox.outbox("is:unread")
    outbox.assert_nothing_sent()
    found: list[SentMail] = await inbox.wait_for(subject=Contains("Hi"), timeout=1)
    return found + inbox.wait_for_blocking(Mail(to=Addr("a@example.test")), count=1)


async def enqueue_in_a_transaction(dsn: str, settings: MailerSettings) -> list[str]:
    import psycopg

    from mailer.queue import send_later, send_later_template

    connection = await psycopg.AsyncConnection.connect(dsn)
    async with connection, connection.transaction():
        first: str = await send_later(
            Message(to="b@example.test", subject="s", body="b"),
            connection=connection,
            settings=settings,
        )
        second: str = await send_later_template(
            "welcome", to="a@example.test", context={"name": "A"}
        )
    return [first, second]


async def use_the_fake_queue(settings: MailerSettings) -> list[SendResult]:
    from mailer.queue import send_later
    from mailer.testing import FakeQueue, QueuedMail, fake_queue

    with fake_queue() as queue:
        await send_later(Message(to="b@example.test", subject="s", body="b"))
    assert isinstance(queue, FakeQueue)
    queue.assert_enqueued(Mail(subject="s"), count=1)
    queue.assert_not_enqueued(to=Addr("x@example.test"))
    jobs: list[QueuedMail] = queue.jobs
    assert jobs[0].message_id.startswith("<")
    return await queue.run_jobs(settings)
