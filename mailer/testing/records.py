"""Define SentMail: one delivered message as every test double records it."""

from __future__ import annotations

import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from functools import cached_property
from typing import cast

from mailer.message import Envelope

_PARSER = BytesParser(policy=email.policy.default)


def _bare(addresses: object) -> tuple[str, ...]:
    header_addresses = getattr(addresses, "addresses", ())
    return tuple(address.addr_spec for address in header_addresses)


@dataclass(frozen=True)
class SentMail:
    """A message as it was handed over: the envelope and the exact bytes.

    The same record comes from the in-memory transport, the mock transport and
    the local SMTP inbox, so the same assertions work on all of them.

    Attributes:
        envelope: MAIL FROM and RCPT TO (the only place Bcc recipients appear).
        raw: The exact message bytes (DATA content, without dot-stuffing).
        mail_options: ESMTP options sent with MAIL FROM (``SIZE=...``).
    """

    envelope: Envelope
    raw: bytes
    mail_options: tuple[str, ...] = field(default=())

    @cached_property
    def message(self) -> EmailMessage:
        """Return the message parsed with ``email.policy.default``."""
        return _PARSER.parsebytes(self.raw)

    @property
    def subject(self) -> str:
        """Return the decoded Subject ("" when absent)."""
        return str(self.message.get("subject", ""))

    @property
    def from_(self) -> tuple[str, ...]:
        """Return the From header's bare addresses."""
        return _bare(self.message.get("from"))

    @property
    def to(self) -> tuple[str, ...]:
        """Return the To header's bare addresses."""
        return _bare(self.message.get("to"))

    @property
    def cc(self) -> tuple[str, ...]:
        """Return the Cc header's bare addresses."""
        return _bare(self.message.get("cc"))

    @property
    def bcc(self) -> tuple[str, ...]:
        """Return envelope recipients that are in neither To nor Cc."""
        shown = {address.lower() for address in (*self.to, *self.cc)}
        return tuple(r for r in self.envelope.rcpt_tos if r.lower() not in shown)

    @property
    def text(self) -> str | None:
        """Return the text/plain body with LF line ends, if there is one."""
        return self._body("plain")

    @property
    def html(self) -> str | None:
        """Return the text/html body with LF line ends, if there is one."""
        return self._body("html")

    def _body(self, subtype: str) -> str | None:
        part = self.message.get_body(preferencelist=(subtype,))
        if part is None:
            return None
        content = cast(str, part.get_content())
        return content.replace("\r\n", "\n")
