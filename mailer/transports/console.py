"""Print messages instead of sending them (MAILER_DSN=console://), for development."""

from __future__ import annotations

import sys
from typing import TextIO

from mailer.content.message import Envelope
from mailer.replies import Reply
from mailer.transports.base import BaseTransport, Delivery


class ConsoleTransport(BaseTransport):
    """Print each message's envelope and content to ``stream``; send nothing.

    Selected by ``MAILER_DSN=console://`` (Django's console e-mail backend, in
    spirit): while a template is being written, ``mailer send`` shows what
    would go out, Bcc envelope recipients included, without any server.

    Args:
        stream: Where to write; default standard output.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    async def deliver(self, envelope: Envelope, content: bytes, /) -> Delivery:
        """Write the message and report it as accepted by nobody but the console."""
        lines = [f"MAIL FROM:<{envelope.mail_from}>"]
        lines += [f"RCPT TO:<{recipient}>" for recipient in envelope.rcpt_tos]
        lines.append(content.decode("utf-8", errors="replace").replace("\r\n", "\n"))
        # One write per message, with no await in between: messages sent
        # concurrently never interleave.
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        return Delivery(envelope.rcpt_tos, {}, Reply(250, "2.0.0 written to console"))
