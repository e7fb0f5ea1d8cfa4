"""Define every error mailer raises; each message is one line naming the field or key.

The tree::

    MailerError(Exception)
    ├── ConfigError(MailerError, ValueError)          .key
    ├── MessageError(MailerError, ValueError)         .field
    │   ├── InvalidAddressError
    │   └── HeaderInjectionError
    ├── TemplateError(MailerError)                    .template
    │   ├── TemplateNotFoundError
    │   ├── TemplateSyntaxError                       .line
    │   ├── UndefinedVariableError                    .variable
    │   └── UnsafeTemplateError                       (sandbox rule or size limit)
    ├── InvalidRecipientsError(MailerError)           .rows
    ├── RecipientsFileError(MailerError)              .path, .line
    │   └── RecipientsChangedError                    (changed while a batch ran)
    ├── JournalError(MailerError)                     .path
    ├── QueueError(MailerError)                       (the queue database)
    ├── RefusedByHookError(MailerError)               .reason (a before_send hook)
    └── DeliveryError(MailerError)                    .reply, .transient, .message_id,
        │                                             .ambiguous, .attempts, .relay
        ├── ConnectError(DeliveryError, ConnectionError)
        │   └── RelaysUnavailableError                .errors
        ├── DeliveryTimeoutError(DeliveryError, TimeoutError)
        ├── TLSError
        ├── AuthenticationError
        ├── UnsupportedError                          (SMTPUTF8 or SIZE missing)
        └── RejectedError
            ├── SenderRefusedError
            ├── RecipientsRefusedError                .refused
            └── DataRefusedError

No message ever contains a secret: settings errors are built from field names and
pydantic's error text with input values hidden, and SMTP errors carry the server's
reply, never the credentials sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Type-only: this module is the bottom layer and imports nothing at run time
    # (replies.py classifies these errors; a bad row is data of the bulk layer).
    from mailer.bulk.recipients import InvalidRow
    from mailer.replies import Reply


class MailerError(Exception):
    """Base class of every error raised by mailer."""


def describe_error(error: BaseException) -> str:
    """Return how a report states ``error``: mailer's own words, else with its type.

    Anything that is not a ``MailerError`` is a bug or an unexpected failure;
    its type name says where to look.
    """
    if isinstance(error, MailerError):
        return str(error)
    return f"{type(error).__name__}: {error}"


class ConfigError(MailerError, ValueError):
    """A setting is missing or has a bad value.

    Attributes:
        key: The environment variable at fault (``MAILER_SMTP_PORT``), or ``None``
            when the problem spans several keys.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class MessageError(MailerError, ValueError):
    """A message field is invalid.

    Attributes:
        field: The field at fault (``to``, ``subject``, ``headers[X-Tag]``...).
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidAddressError(MessageError):
    """An address is malformed, or a field holds more than one address."""


class HeaderInjectionError(MessageError):
    """A header value holds CR, LF or another control character."""


class TemplateError(MailerError):
    """A template set cannot be loaded or rendered.

    Attributes:
        template: The template set name, or ``set/file`` when one file is at fault.
    """

    def __init__(self, message: str, *, template: str) -> None:
        super().__init__(message)
        self.template = template


class TemplateNotFoundError(TemplateError):
    """The template set, or a file it needs, does not exist."""


class TemplateSyntaxError(TemplateError):
    """A template file does not parse.

    Attributes:
        line: The line number Jinja2 reported, if any.
    """

    def __init__(self, message: str, *, template: str, line: int | None) -> None:
        super().__init__(message, template=template)
        self.line = line


class UndefinedVariableError(TemplateError):
    """A template used a variable the context does not define.

    Attributes:
        variable: The undefined name (or ``object.attribute``).
    """

    def __init__(self, message: str, *, template: str, variable: str) -> None:
        super().__init__(message, template=template)
        self.variable = variable


class UnsafeTemplateError(TemplateError):
    """An untrusted template broke a sandbox rule or a size limit."""


class InvalidRecipientsError(MailerError):
    """Some rows of a batch do not render into a valid message; nothing was sent.

    Attributes:
        rows: Every bad row, in input order.
    """

    def __init__(self, rows: Sequence[InvalidRow]) -> None:
        count = len(rows)
        first = rows[0] if rows else None
        summary = f"{count} invalid row{'s' if count != 1 else ''}"
        if first is not None:
            summary += f" (first: line {first.line}: {first.error})"
        super().__init__(f"{summary}; nothing was sent")
        self.rows = tuple(rows)


class RecipientsFileError(MailerError):
    """A recipients file cannot be read as a whole: its encoding, its header, a cell.

    Unlike a bad row (``InvalidRow``), nothing after the fault can be trusted,
    so the batch stops there.

    Attributes:
        path: The recipients file.
        line: The line at fault (1-based; 0 when it is the whole file).
    """

    def __init__(self, message: str, *, path: str, line: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class RecipientsChangedError(RecipientsFileError):
    """The recipients file changed while a batch was reading it.

    The rows read since are not those that were checked, so no further
    message is sent: the rest of the batch ends ``pending``.
    """


class JournalError(MailerError):
    """A delivery journal cannot be used: unreadable, locked, or for another batch.

    Attributes:
        path: The journal file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ContentChangedError(JournalError):
    """A message that may have been delivered now builds different bytes.

    A journal resends a message in doubt with its Message-ID, rebuilt from the
    template, its files and the DKIM key; if one of them changed since, the
    copy would differ from the one that may have arrived. It is not sent: it
    stays pending (``transient``) until they are put back.
    """

    transient = True


class QueueError(MailerError):
    """The mail queue cannot be used: no database, no schema, or a database error.

    The message never holds ``MAILER_QUEUE_DSN`` nor its password.
    """


class QueuedContentChangedError(QueueError):
    """A queued message that may have been delivered would go out as other bytes.

    A worker resends a message in doubt with its Message-ID and Date; if its
    DKIM key, its hooks or its mailer version differ from those of the worker
    that sent it first, the copy would differ from the one that may have
    arrived. It is not sent: it stays pending, and its job comes back for a
    worker with the first one's settings.
    """

    transient = True


class RefusedByHookError(MailerError):
    """A ``before_send`` hook refused the message: nothing was sent, no retry.

    Attributes:
        reason: The hook's reason, as it gave it.
        hook: The hook's name (``module.function``).
    """

    def __init__(self, reason: str, *, hook: str) -> None:
        super().__init__(f"refused by {hook}: {reason}")
        self.reason = reason
        self.hook = hook


class DeliveryError(MailerError):
    """Sending failed.

    Attributes:
        reply: The server's reply, when there was one.
        transient: Whether trying again later may succeed (4xx replies, lost
            connections, timeouts).
        message_id: The Message-ID of the message that failed, once assigned.
        ambiguous: The failure came after the content was (or may have been)
            sent and before the server's reply: the message may have been
            delivered (RFC 1047).
        attempts: How many transactions were tried before giving up.
        relay: The relay that failed (``host:port``), when one is known.
    """

    def __init__(
        self,
        message: str,
        *,
        reply: Reply | None = None,
        transient: bool = False,
        message_id: str | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.reply = reply
        self.transient = transient
        self.message_id = message_id
        self.ambiguous = ambiguous
        self.attempts = 1
        self.relay: str | None = None


class ConnectError(DeliveryError, ConnectionError):
    """The server could not be reached, or dropped the connection."""


class RelaysUnavailableError(ConnectError):
    """Every relay of a failover or round-robin list failed, each transiently.

    Attributes:
        errors: Each relay's error, keyed by ``host:port``, in the order tried.
    """

    def __init__(
        self, errors: Mapping[str, DeliveryError], *, message_id: str | None = None
    ) -> None:
        details = "; ".join(str(error) for error in errors.values())
        last = list(errors.values())[-1] if errors else None
        super().__init__(
            f"every relay failed ({len(errors)}): {details}",
            reply=last.reply if last is not None else None,
            transient=True,
            message_id=message_id,
        )
        self.errors = dict(errors)


class DeliveryTimeoutError(DeliveryError, TimeoutError):
    """The server did not answer in time."""


class TLSError(DeliveryError):
    """TLS could not be set up: no STARTTLS offered, or the certificate was refused."""


class AuthenticationError(DeliveryError):
    """The server refused the credentials (or offers no way to log in)."""


class UnsupportedError(DeliveryError):
    """The server lacks an extension the message needs (SMTPUTF8, SIZE)."""


class RejectedError(DeliveryError):
    """The server refused the transaction."""


class SenderRefusedError(RejectedError):
    """The server refused the envelope sender (MAIL FROM)."""


class RecipientsRefusedError(RejectedError):
    """The server refused every recipient.

    Attributes:
        refused: The reply the server gave for each recipient.
    """

    def __init__(
        self,
        message: str,
        *,
        refused: Mapping[str, Reply],
        reply: Reply | None = None,
        transient: bool = False,
        message_id: str | None = None,
    ) -> None:
        super().__init__(
            message, reply=reply, transient=transient, message_id=message_id
        )
        self.refused = dict(refused)


class DataRefusedError(RejectedError):
    """The server refused the message content (at DATA or after the final dot)."""
