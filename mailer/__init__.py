"""mailer: templated email over real SMTP, sent concurrently, and easy to test."""

from importlib.metadata import PackageNotFoundError, version

from mailer.bulk.attachments import RowAttachments
from mailer.bulk.identity import CheckSummary
from mailer.bulk.recipients import DuplicateRow, InvalidRow, Recipient, RecipientFile
from mailer.bulk.report import BatchReport, ResumeCounts
from mailer.bulk.sending import send_messages, stream_messages
from mailer.config.rates import RateLimit
from mailer.config.settings import MailerSettings
from mailer.content.addresses import Address
from mailer.content.attachments import Attachment
from mailer.content.message import Envelope, Message
from mailer.content.unsubscribe import Unsubscribe
from mailer.delivery.client import MessageClient, generate_message_client
from mailer.delivery.control import SendRequest
from mailer.delivery.hooks import Hooks, Refuse
from mailer.delivery.results import SendResult, SendStatus
from mailer.delivery.retry import RetryPolicy
from mailer.delivery.state import (
    AttemptObserver,
    MessageAttempts,
    OutgoingMessage,
    PreparedMessage,
)
from mailer.delivery.telemetry import MessageTrace, Telemetry
from mailer.exceptions import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ContentChangedError,
    DataRefusedError,
    DeliveryError,
    DeliveryTimeoutError,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidRecipientsError,
    JournalError,
    MailerError,
    MessageError,
    QueueError,
    RecipientsChangedError,
    RecipientsFileError,
    RecipientsRefusedError,
    RefusedByHookError,
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
from mailer.replies import RecipientStatus, Reply, Verdict
from mailer.templates.sets import render
from mailer.templates.strings import render_string
from mailer.transports.base import Delivery
from mailer.transports.ratelimit import LocalRateLimiter, RateLimiter

# The name on the package index: "mailer" there is an unrelated 2015 project.
DISTRIBUTION = "aiomailer"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Address",
    "Attachment",
    "AttemptObserver",
    "AuthenticationError",
    "BatchReport",
    "CheckSummary",
    "ConfigError",
    "ConnectError",
    "ContentChangedError",
    "DataRefusedError",
    "Delivery",
    "DeliveryError",
    "DeliveryTimeoutError",
    "DuplicateRow",
    "Envelope",
    "HeaderInjectionError",
    "Hooks",
    "InvalidAddressError",
    "InvalidRecipientsError",
    "InvalidRow",
    "JournalError",
    "LocalRateLimiter",
    "MailerError",
    "MailerSettings",
    "Message",
    "MessageAttempts",
    "MessageClient",
    "MessageError",
    "MessageTrace",
    "OutgoingMessage",
    "PreparedMessage",
    "QueueError",
    "RateLimit",
    "RateLimiter",
    "Recipient",
    "RecipientFile",
    "RecipientStatus",
    "RecipientsChangedError",
    "RecipientsFileError",
    "RecipientsRefusedError",
    "Refuse",
    "RefusedByHookError",
    "RejectedError",
    "RelaysUnavailableError",
    "Reply",
    "ResumeCounts",
    "RetryPolicy",
    "RowAttachments",
    "SendRequest",
    "SendResult",
    "SendStatus",
    "SenderRefusedError",
    "TLSError",
    "Telemetry",
    "TemplateError",
    "TemplateNotFoundError",
    "TemplateSyntaxError",
    "UndefinedVariableError",
    "UnsafeTemplateError",
    "Unsubscribe",
    "UnsupportedError",
    "Verdict",
    "__version__",
    "generate_message_client",
    "render",
    "render_string",
    "send_messages",
    "stream_messages",
]
