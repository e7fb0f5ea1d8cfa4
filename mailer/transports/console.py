"""Write messages to a stream instead of sending them (for previews)."""

from __future__ import annotations

import sys
from typing import TextIO

from mailer.content.message import Envelope
from mailer.replies import Reply
from mailer.transports.base import BaseTransport, Delivery


class ConsoleTransport(BaseTransport):
    """Print each message's envelope and content to ``stream``; send nothing."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Write the message and report it as accepted by nobody but the console."""
        self.stream.write(f"MAIL FROM:<{envelope.mail_from}>\n")
        for recipient in envelope.rcpt_tos:
            self.stream.write(f"RCPT TO:<{recipient}>\n")
        self.stream.write(
            content.decode("utf-8", errors="replace").replace("\r\n", "\n")
        )
        self.stream.write("\n")
        return Delivery(envelope.rcpt_tos, {}, Reply(250, "2.0.0 written to console"))
