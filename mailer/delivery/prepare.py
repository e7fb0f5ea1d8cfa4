"""Turn a Message into the bytes that go out: Message-ID, Date, DKIM, our limits.

``MessageClient.prepare`` does this for every message it sends. A batch may do
it earlier, once per row, in its check pass (``mailer.bulk.spool``), possibly in
other processes: ``Preparer`` holds what that needs (the settings and the DKIM
signer built from them), and ``PreparedMessage.of`` keeps the result in a
picklable form that ``MessageClient.stream`` sends as it is.
"""

from __future__ import annotations

from mailer.config.settings import MailerSettings
from mailer.config.signing import check_alignment, dkim_signer
from mailer.content.message import Message
from mailer.content.serialize import serialize_message
from mailer.delivery.limits import check_attachment_limits, check_message_limits
from mailer.delivery.state import OutgoingMessage
from mailer.exceptions import ConfigError


class Preparer:
    """Prepare messages for the given settings (their sender, DKIM key and limits).

    Args:
        settings: ``MAILER_FROM``, ``MAILER_DKIM_*``, ``MAILER_MAX_*``.
        sign: Sign with the DKIM key of ``settings``; off where the message
            is only checked and another process signs it (the queue's
            enqueue: the worker holds the key).

    Raises:
        ConfigError: The DKIM settings are wrong (see ``dkim_signer``).
    """

    def __init__(self, settings: MailerSettings, *, sign: bool = True) -> None:
        self.settings = settings
        self.dkim_signer = dkim_signer(settings) if sign else None

    def prepare(
        self,
        message: Message,
        /,
        *,
        message_id: str | None = None,
        date: str | None = None,
    ) -> OutgoingMessage:
        """Assign a Message-ID and Date, serialise the message and sign it (DKIM).

        Args:
            message: The message.
            message_id: Reuse this Message-ID (angle brackets included).
            date: Reuse this Date (with ``message_id``: the same bytes again).

        Raises:
            ConfigError: The message has no sender and ``MAILER_FROM`` is not
                set, or its sender does not align with ``MAILER_DKIM_DOMAIN``.
            MessageError: The message is over ``MAILER_MAX_RECIPIENTS`` or
                ``MAILER_MAX_MESSAGE_SIZE``, or a file attachment is unreadable.
        """
        sender = message.sender or self.settings.default_sender
        if sender is None:
            raise ConfigError(
                "MAILER_FROM: not set, and the message has no sender",
                key="MAILER_FROM",
            )
        # Before building: a file over the limit is then never read or encoded.
        check_attachment_limits(message.attachments, self.settings)
        serialized = serialize_message(
            message, sender, message_id=message_id, date=date
        )
        content = serialized.content
        if self.dkim_signer is not None:
            check_alignment(self.dkim_signer, sender, field="sender")
            content = self.dkim_signer.sign(content)
        envelope = message.envelope(sender)
        check_message_limits(envelope, content, self.settings)
        return OutgoingMessage(
            message, envelope, content, serialized.message_id, serialized.date
        )
