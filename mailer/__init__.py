"""mailer: templated email over real SMTP, sent concurrently, and easy to test."""

from importlib.metadata import PackageNotFoundError, version

from mailer.addresses import Address
from mailer.batch_control import SendRequest
from mailer.client import MessageClient, generate_message_client
from mailer.exceptions import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    DataRefusedError,
    DeliveryError,
    DeliveryTimeoutError,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidRecipientsError,
    InvalidRow,
    JournalError,
    MailerError,
    MessageError,
    RecipientsRefusedError,
    RejectedError,
    RelaysUnavailableError,
    SenderRefusedError,
    TemplateError,
    TemplateNotFoundError,
    TemplateSyntaxError,
    TLSError,
    UndefinedVariableError,
    UnsafeTemplateError,
    UnsupportedError,
)
from mailer.message import Envelope, Message
from mailer.recipients import Recipient, RecipientFile
from mailer.results import (
    BatchReport,
    Delivery,
    RecipientStatus,
    Reply,
    SendResult,
    SendStatus,
)
from mailer.retry import RetryPolicy
from mailer.sending import send_messages, stream_messages
from mailer.settings import MailerSettings
from mailer.template_strings import render_string
from mailer.templates import render

try:
    __version__ = version("mailer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Address",
    "AuthenticationError",
    "BatchReport",
    "ConfigError",
    "ConnectError",
    "DataRefusedError",
    "Delivery",
    "DeliveryError",
    "DeliveryTimeoutError",
    "Envelope",
    "HeaderInjectionError",
    "InvalidAddressError",
    "InvalidRecipientsError",
    "InvalidRow",
    "JournalError",
    "MailerError",
    "MailerSettings",
    "Message",
    "MessageClient",
    "MessageError",
    "Recipient",
    "RecipientFile",
    "RecipientStatus",
    "RecipientsRefusedError",
    "RejectedError",
    "RelaysUnavailableError",
    "Reply",
    "RetryPolicy",
    "SendRequest",
    "SendResult",
    "SendStatus",
    "SenderRefusedError",
    "TLSError",
    "TemplateError",
    "TemplateNotFoundError",
    "TemplateSyntaxError",
    "UndefinedVariableError",
    "UnsafeTemplateError",
    "UnsupportedError",
    "__version__",
    "generate_message_client",
    "render",
    "render_string",
    "send_messages",
    "stream_messages",
]
