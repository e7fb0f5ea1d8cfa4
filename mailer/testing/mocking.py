"""Replace MessageClient.send with an autospecced mock that answers like the real one.

The seam is ``MessageClient.send``: ``send_many`` and ``send_messages`` go
through it, so one patch covers every way of sending::

    with patch_send() as send:
        await notify(user)
    send.assert_awaited_once_with(Mail(to=Addr(user.email), subject="Hi"))

The mock checks its arguments against the real signature, and by default
returns the ``SendResult`` a server accepting every recipient would give. To
change that, set ``send.return_value``, or ``send.side_effect`` to an exception
(``RecipientsRefusedError(...)``) or to a function of the message (returning
``None`` from it means "accepted as usual"). Before the mock is awaited the
client still prepares the message (sender, Message-ID, bytes), as the real one
does.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast
from unittest import mock

from mailer.content.message import Message
from mailer.delivery.client import MessageClient
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.state import OutgoingMessage
from mailer.exceptions import DeliveryError
from mailer.records import SentMail
from mailer.replies import RecipientStatus, Reply
from mailer.testing.outbox import Outbox

SEND_TARGET = "mailer.delivery.client.MessageClient.send"
"""The method patch_send and the mock_send fixture replace (every send uses it)."""

MOCK_REPLY = Reply(250, "2.0.0 OK: accepted by mock_send")


def accepted_result(outgoing: OutgoingMessage) -> SendResult:
    """Return the result of a prepared message accepted for every recipient."""
    return SendResult.of(
        SendStatus.SENT,
        to=(address.addr_spec for address in outgoing.message.to),
        message_id=outgoing.message_id,
        recipients=dict.fromkeys(outgoing.envelope.rcpt_tos, RecipientStatus.ACCEPTED),
        refused={},
        reply=MOCK_REPLY,
        attempts=1,
    )


@contextmanager
def patch_send(outbox: Outbox | None = None) -> Iterator[mock.AsyncMock]:
    """Patch ``MessageClient.send`` with an autospecced mock while the block runs.

    Args:
        outbox: Also record each accepted message there (as the real bytes).

    Yields:
        The mock (an autospecced function mock; use it like an ``AsyncMock``).
    """
    # Autospec the method as bound, so calls are recorded without ``self``:
    # send.assert_awaited_once_with(message) reads as the call site does.
    bound = types.MethodType(MessageClient.send, object())
    send_mock: Any = mock.create_autospec(bound, name="MessageClient.send")
    default_return = send_mock.return_value

    async def send(
        self: MessageClient, message: Message, /, *args: Any, **kwargs: Any
    ) -> SendResult:
        outgoing = self.prepare(message)
        try:
            result = await send_mock(message, *args, **kwargs)
        except DeliveryError as exc:
            exc.message_id = outgoing.message_id  # as the real send does
            raise
        if result is None or result is default_return:
            # Nothing set by the test, or a side_effect returning None: the
            # message is accepted, as a server taking every recipient would.
            result = accepted_result(outgoing)
        if outbox is not None and isinstance(result, SendResult) and result.is_sent:
            outbox.append(SentMail(envelope=outgoing.envelope, raw=outgoing.content))
        return cast(SendResult, result)

    with mock.patch.object(MessageClient, "send", send):
        yield cast(mock.AsyncMock, send_mock)
