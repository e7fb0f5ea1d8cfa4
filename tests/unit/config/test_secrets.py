"""The password redactor: every form of the password, in any reply, error or result."""

from __future__ import annotations

import base64
import json
import traceback
from collections.abc import Callable

import aiosmtplib
import pytest

from mailer import (
    Delivery,
    DeliveryError,
    Message,
    MessageClient,
    RecipientsRefusedError,
    Reply,
    SenderRefusedError,
    SendStatus,
)
from mailer.config.secrets import REDACTED, Redactor, secret_forms
from mailer.config.settings import MailerSettings
from mailer.exceptions import RelaysUnavailableError
from mailer.testing import SentMail
from mailer.transports import MockTransport

USER = "shop@example.test"
PASSWORD = "Zq7-rotten-Tomato-41"


def b64(data: str, *, pad: bool = True) -> str:
    encoded = base64.b64encode(data.encode()).decode()
    return encoded if pad else encoded.rstrip("=")


PLAIN = b64(f"\0{USER}\0{PASSWORD}")
PLAIN_WITH_AUTHZID = b64(f"{USER}\0{USER}\0{PASSWORD}")
LOGIN = b64(PASSWORD)
# Every form, and a few letters of each, to check that nothing of it is left.
LEAKS = [PASSWORD, PLAIN, PLAIN.rstrip("="), LOGIN, LOGIN.rstrip("=")]


def assert_clean(text: str) -> None:
    for form in LEAKS:
        assert form not in text
        assert form.rstrip("=")[4:16] not in text, form


def split(form: str, prefix: str = "") -> str:
    """The form wrapped over two reply lines, as aiosmtplib joins them."""
    half = len(form) // 2
    return f"{form[:half]}\n{prefix}{form[half:]}"


REPLY_TEXTS = {
    "plain": f"5.7.8 bad password {PASSWORD}",
    "base64 PLAIN, padded": f"5.7.8 got {PLAIN}",
    "base64 PLAIN, unpadded": f"5.7.8 got {PLAIN.rstrip('=')}",
    "base64 LOGIN, padded": f"5.7.8 got {LOGIN}",
    "base64 LOGIN, unpadded": f"5.7.8 got {LOGIN.rstrip('=')}",
    "plain, split over two lines": f"5.7.8 got {split(PASSWORD)}",
    "base64, split, code repeated": f"5.7.8 got {split(PLAIN, '5.7.8 ')}",
    "base64 inside a longer base64 text": f"5.7.8 got {b64('xy' + PASSWORD + 'z')}",
    "with an authorisation id": f"5.7.8 {PLAIN_WITH_AUTHZID}",
}


@pytest.mark.parametrize("text", REPLY_TEXTS.values(), ids=REPLY_TEXTS.keys())
def test_every_form_of_the_password_is_redacted(text: str) -> None:
    """Plain, base64 (padded or not, any alignment), split over two lines: all hidden."""
    redacted = Redactor([(USER, PASSWORD)]).text(text)
    assert REDACTED in redacted
    assert_clean(redacted)
    assert redacted.startswith("5.7.8 ")


def test_text_without_the_password_is_unchanged() -> None:
    """Other text, the user name included, is left as it is."""
    redactor = Redactor([(USER, PASSWORD)])
    text = f"5.1.0 <{USER}> sender refused\nsecond line"
    assert redactor.text(text) == text
    reply = Reply(550, text)
    assert redactor.reply(reply) is reply


def test_no_password_means_nothing_to_do() -> None:
    """Settings without a login give a redactor that changes nothing."""
    redactor = Redactor.from_settings(MailerSettings(_env_file=None))
    assert not redactor
    assert redactor.text(PASSWORD) == PASSWORD


def test_every_relay_password_is_known() -> None:
    """With MAILER_DSN, each relay's password is redacted."""
    settings = MailerSettings(
        _env_file=None,
        dsn="failover(smtps://a:First-secret-1@a.example.com "
        "smtps://b:Second-secret-2@b.example.com)",
    )
    redactor = Redactor.from_settings(settings)
    assert redactor.text("First-secret-1 and Second-secret-2") == (
        f"{REDACTED} and {REDACTED}"
    )


def test_an_error_is_redacted_with_its_replies_and_its_cause() -> None:
    """Message, args, reply, refused replies, nested relay errors and the chained cause."""
    reply = Reply(550, f"5.1.0 {PASSWORD} is not an address")
    cause = aiosmtplib.SMTPRecipientRefused(550, reply.text, "a@example.test")
    inner = SenderRefusedError(f"refused: {reply}", reply=reply)
    error = RecipientsRefusedError(
        f"refused: {reply}", refused={"a@example.test": reply}, reply=reply
    )
    error.__cause__ = cause
    relays = RelaysUnavailableError({"a:25": inner})
    Redactor([(USER, PASSWORD)]).error(error)
    Redactor([(USER, PASSWORD)]).error(relays)
    assert error.reply is not None
    assert error.reply.text == f"5.1.0 {REDACTED} is not an address"
    assert error.refused["a@example.test"].text == error.reply.text
    texts = [
        str(error),
        repr(error),
        "".join(traceback.format_exception(error)),
        repr(cause.message),
        str(relays),
        repr(relays.errors),
    ]
    for text in texts:
        assert_clean(text)


@pytest.fixture
def client_with(
    make_settings: Callable[..., MailerSettings],
) -> Callable[..., MessageClient]:
    def make(handler: Callable[[SentMail], Delivery | None]) -> MessageClient:
        settings = make_settings(
            smtp_username=USER, smtp_password=PASSWORD, max_attempts=1
        )
        return MessageClient(settings, transport=MockTransport(handler))

    return make


async def test_a_reply_quoting_the_password_at_mail_from_is_redacted_everywhere(
    client_with: Callable[..., MessageClient],
) -> None:
    """Not only AUTH: a refusal at MAIL FROM quoting it reaches results and errors redacted."""
    quoted = Reply(553, f"5.7.1 sender {USER} with password {split(PASSWORD)}")

    def refuse(mail: SentMail) -> None:
        raise SenderRefusedError(f"refused the sender: {quoted}", reply=quoted)

    async with client_with(refuse) as client:
        with pytest.raises(DeliveryError) as caught:
            await client.send(Message(to="a@example.test", subject="s", body="b"))
        [result] = await client.send_many(
            [Message(to="b@example.test", subject="s", body="b")]
        )
    assert result.status is SendStatus.FAILED
    line = json.dumps(result.to_report())
    assert REDACTED in line
    assert USER in line  # the user name is not a secret
    for text in (str(caught.value), repr(caught.value.reply), line, repr(result)):
        assert_clean(text)


async def test_a_delivery_whose_replies_quote_the_password_is_redacted(
    client_with: Callable[..., MessageClient],
) -> None:
    """A 250 and a per-recipient refusal that quote it: the result holds neither."""

    def accept_one(mail: SentMail) -> Delivery:
        return Delivery(
            ("a@example.test",),
            {"b@example.test": Reply(550, f"5.1.1 no {LOGIN.rstrip('=')}")},
            Reply(250, f"2.0.0 queued, auth was {PLAIN}"),
        )

    async with client_with(accept_one) as client:
        result = await client.send(
            Message(to=["a@example.test", "b@example.test"], subject="s", body="b")
        )
    assert result.status is SendStatus.SENT
    assert result.reply == Reply(250, f"2.0.0 queued, auth was {REDACTED}")
    assert result.refused["b@example.test"].text == f"5.1.1 no {REDACTED}"
    assert_clean(json.dumps(result.to_report()))


def test_secret_forms_lists_the_wire_forms_longest_first() -> None:
    """The AUTH PLAIN and AUTH LOGIN base64, padded and not, and the plain password."""
    forms = secret_forms(USER, PASSWORD)
    for form in (PASSWORD, PLAIN, PLAIN.rstrip("="), LOGIN, LOGIN.rstrip("=")):
        assert form in forms
    assert [len(form) for form in forms] == sorted(map(len, forms), reverse=True)
    assert secret_forms(USER, "") == []
