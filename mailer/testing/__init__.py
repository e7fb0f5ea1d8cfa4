"""Test doubles for code that sends mail: records, matchers, outboxes, a test server.

Importing this package is cheap and has no side effects: the SMTP test server
(aiosmtpd) and the test CA (trustme) load only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mailer.records import DKIMSignatureInfo, SentAttachment, SentMail, SessionInfo
from mailer.testing.attachments import Attachment
from mailer.testing.mail import Mail
from mailer.testing.matchers import (
    Addr,
    AllOf,
    AnyOf,
    Contains,
    Matcher,
    Not,
    Predicate,
    Regex,
)
from mailer.testing.outbox import Outbox

if TYPE_CHECKING:
    from mailer.testing.config import isolated_settings
    from mailer.testing.dkim import make_dkim_key, verify_dkim
    from mailer.testing.fakes import (
        MemoryTransport,
        MockTransport,
        OutboxTransport,
        capture_mail,
        use_transport,
    )
    from mailer.testing.inbox import InboxClient, InboxError
    from mailer.testing.mocking import SEND_TARGET, patch_send
    from mailer.testing.queue import FakeQueue, QueuedMail, fake_queue
    from mailer.testing.server.faults import END_OF_DATA, GREETING, FaultPlan, FaultRule
    from mailer.testing.server.server import SMTPTestServer
    from mailer.testing.server.threaded import ThreadedSMTPTestServer
    from mailer.testing.tls import TLSBundle

# Loaded on first use: name -> module.
_LAZY = {
    "END_OF_DATA": "mailer.testing.server.faults",
    "FaultPlan": "mailer.testing.server.faults",
    "FaultRule": "mailer.testing.server.faults",
    "GREETING": "mailer.testing.server.faults",
    "InboxClient": "mailer.testing.inbox",
    "InboxError": "mailer.testing.inbox",
    "MemoryTransport": "mailer.testing.fakes",
    "MockTransport": "mailer.testing.fakes",
    "OutboxTransport": "mailer.testing.fakes",
    "SEND_TARGET": "mailer.testing.mocking",
    "SMTPTestServer": "mailer.testing.server.server",
    "ThreadedSMTPTestServer": "mailer.testing.server.threaded",
    "capture_mail": "mailer.testing.fakes",
    "patch_send": "mailer.testing.mocking",
    "use_transport": "mailer.testing.fakes",
    "TLSBundle": "mailer.testing.tls",
    "isolated_settings": "mailer.testing.config",
    "make_dkim_key": "mailer.testing.dkim",
    "verify_dkim": "mailer.testing.dkim",
    "FakeQueue": "mailer.testing.queue",
    "QueuedMail": "mailer.testing.queue",
    "fake_queue": "mailer.testing.queue",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mailer.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "END_OF_DATA",
    "GREETING",
    "SEND_TARGET",
    "Addr",
    "AllOf",
    "AnyOf",
    "Attachment",
    "Contains",
    "DKIMSignatureInfo",
    "FakeQueue",
    "FaultPlan",
    "FaultRule",
    "InboxClient",
    "InboxError",
    "Mail",
    "Matcher",
    "MemoryTransport",
    "MockTransport",
    "Not",
    "Outbox",
    "OutboxTransport",
    "Predicate",
    "QueuedMail",
    "Regex",
    "SMTPTestServer",
    "SentAttachment",
    "SentMail",
    "SessionInfo",
    "TLSBundle",
    "ThreadedSMTPTestServer",
    "capture_mail",
    "fake_queue",
    "isolated_settings",
    "make_dkim_key",
    "patch_send",
    "use_transport",
    "verify_dkim",
]
