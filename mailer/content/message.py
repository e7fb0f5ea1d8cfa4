"""Define Message, an immutable validated email, and Envelope, where Bcc lives."""

from __future__ import annotations

import email.policy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser

from mailer.content.addresses import (
    Address,
    check_encodable,
    check_header_text,
    check_no_controls,
    excerpt,
    parse_addresses,
)
from mailer.content.attachments import Attachment
from mailer.content.serialize import serialize
from mailer.content.unsubscribe import Unsubscribe
from mailer.exceptions import HeaderInjectionError, MessageError

# An envelope address ends at a space or ">" on the MAIL/RCPT line (RFC 5321
# 4.1.2); anything after would be read as an ESMTP parameter.
_ENVELOPE_UNSAFE = re.compile(r"[\s<>]")
# RFC 5322 3.6.8: a field name is printable ASCII except the colon.
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")

# Headers the message builds from its own fields; setting them by hand would
# duplicate or contradict them.
RESERVED_HEADERS = frozenset(
    {
        "bcc",
        "cc",
        "content-transfer-encoding",
        "content-type",
        "date",
        "dkim-signature",
        "from",
        "message-id",
        "mime-version",
        "reply-to",
        "subject",
        "to",
    }
)

AddressInput = str | Address | Iterable[str | Address]


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope of a message: who it is from and who gets it.

    Bcc recipients appear here and nowhere in the headers.

    Attributes:
        mail_from: The address for MAIL FROM.
        rcpt_tos: The addresses for RCPT TO, de-duplicated, in To, Cc, Bcc order.
        smtputf8: Whether an address needs the SMTPUTF8 extension.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    smtputf8: bool = False

    def __post_init__(self) -> None:
        # For envelopes made by hand: aiosmtplib would silently rewrite
        # "a@x\r\nRCPT TO:<b@y>" rather than refuse it. Control characters are
        # never valid, so this holds for envelopes a server received as well.
        try:
            # One check of every address at once; the one at fault is found
            # (and named) only when there is one.
            check_no_controls("".join((self.mail_from, *self.rcpt_tos)), field="")
        except MessageError:
            for field, address in self._fields():
                check_no_controls(address, field=field)
            raise

    def check_sendable(self) -> None:
        """Raise unless every address can go on a MAIL or RCPT line as it is.

        Stricter than what a server may receive: a space, ``<`` or ``>`` (even
        in a quoted local part, which Address never makes) could end the
        address early on a careless server and pass the rest as an ESMTP
        parameter (``"foo@x> ORCPT=..."@y``, go-mail#495).

        Raises:
            HeaderInjectionError: An address holds a space, ``<`` or ``>``.
        """
        for field, address in self._fields():
            if _ENVELOPE_UNSAFE.search(address):
                raise HeaderInjectionError(
                    f"{field}: space, '<' or '>' is not allowed in {excerpt(address)}",
                    field=field,
                )

    def _fields(self) -> list[tuple[str, str]]:
        return [
            ("envelope.mail_from", self.mail_from),
            *(
                (f"envelope.rcpt_tos[{index}]", recipient)
                for index, recipient in enumerate(self.rcpt_tos)
            ),
        ]


@dataclass(frozen=True, slots=True, repr=False, init=False)
class Message:
    """An email to send: validated when made, immutable, equal by value.

    The Message-ID and Date are not fields: they are assigned when the message is
    built for sending, so two messages made from the same values stay equal
    (which is what ``mock.assert_called_once_with(Message(...))`` needs).

    Attributes:
        to: One or more recipients.
        subject: The subject line (no control characters).
        body: The plain-text body.
        html: The HTML body; with it the message is multipart/alternative.
        cc: Copy recipients, shown in the headers.
        bcc: Blind copy recipients, on the envelope only.
        reply_to: Where replies should go.
        sender: The From address; ``None`` means the configured ``MAILER_FROM``.
        headers: Extra header fields, in order.
        attachments: Files sent with the message, in order (inline images
            with a Content-ID go beside the HTML, in multipart/related).
        unsubscribe: Where to unsubscribe (``List-Unsubscribe`` headers).
    """

    to: tuple[Address, ...]
    subject: str
    body: str
    html: str | None
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    sender: Address | None
    headers: tuple[tuple[str, str], ...]
    attachments: tuple[Attachment, ...]
    unsubscribe: Unsubscribe | None

    def __init__(
        self,
        *,
        to: AddressInput,
        subject: str,
        body: str,
        html: str | None = None,
        cc: AddressInput | None = None,
        bcc: AddressInput | None = None,
        reply_to: AddressInput | None = None,
        sender: str | Address | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        attachments: Iterable[Attachment] | None = None,
        unsubscribe: str | Iterable[str] | Unsubscribe | None = None,
    ) -> None:
        """Validate every field and build the message.

        ``unsubscribe`` takes an https URL (one-click, RFC 8058), a ``mailto:``
        URL, or both in a list.

        Raises:
            InvalidAddressError: An address is malformed, or a field holds two.
            HeaderInjectionError: A header value holds a control character.
            MessageError: A field has the wrong type or is missing.
        """
        to_addresses = parse_addresses(to, field="to")
        if not to_addresses:
            raise MessageError("to: at least one recipient is required", field="to")
        _check_text(subject, field="subject")
        _check_body(body, field="body")
        if html is not None:
            _check_body(html, field="html")
        sender_address = (
            None if sender is None else Address.parse(sender, field="sender")
        )
        set_ = object.__setattr__
        set_(self, "to", to_addresses)
        set_(self, "subject", subject)
        set_(self, "body", body)
        set_(self, "html", html)
        set_(self, "cc", parse_addresses(cc, field="cc"))
        set_(self, "bcc", parse_addresses(bcc, field="bcc"))
        set_(self, "reply_to", parse_addresses(reply_to, field="reply_to"))
        set_(self, "sender", sender_address)
        set_(self, "headers", _checked_headers(headers))
        set_(self, "attachments", _checked_attachments(attachments))
        set_(self, "unsubscribe", _checked_unsubscribe(unsubscribe, self.headers))

    def __repr__(self) -> str:
        parts = [f"to={[str(a) for a in self.to]!r}", f"subject={self.subject!r}"]
        # Full text, not an excerpt: mock assertion failures print this repr,
        # and a difference must be visible in it.
        parts.append(f"body={self.body!r}")
        if self.html is not None:
            parts.append(f"html={self.html!r}")
        for name in ("cc", "bcc", "reply_to"):
            addresses: tuple[Address, ...] = getattr(self, name)
            if addresses:
                parts.append(f"{name}={[str(a) for a in addresses]!r}")
        if self.sender is not None:
            parts.append(f"sender={str(self.sender)!r}")
        if self.headers:
            parts.append(f"headers={dict(self.headers)!r}")
        if self.attachments:
            parts.append(f"attachments={list(self.attachments)!r}")
        if self.unsubscribe is not None:
            parts.append(f"unsubscribe={self.unsubscribe!r}")
        return f"Message({', '.join(parts)})"

    def envelope(self, default_sender: Address) -> Envelope:
        """Return the SMTP envelope: MAIL FROM and every To, Cc and Bcc recipient.

        Args:
            default_sender: The From to use when the message has no sender.
        """
        sender = self.sender or default_sender
        addresses = (*self.to, *self.cc, *self.bcc)
        # dict keeps the first of each, in order.
        recipients = tuple(dict.fromkeys([address.envelope for address in addresses]))
        smtputf8 = sender.needs_smtputf8 or any(
            a.needs_smtputf8 for a in (*addresses, *self.reply_to)
        )
        return Envelope(sender.envelope, recipients, smtputf8)

    def to_bytes(
        self,
        default_sender: Address,
        *,
        message_id: str | None = None,
        date: str | None = None,
    ) -> bytes:
        """Return the message as sent in DATA (no Bcc header, CRLF line ends).

        Args:
            default_sender: The From to use when the message has no sender.
            message_id: The Message-ID to write; a fresh one by default.
            date: The Date to write; now by default.
        """
        _, content = serialize(
            self, self.sender or default_sender, message_id=message_id, date=date
        )
        return content

    def to_email_message(
        self,
        default_sender: Address | str,
        *,
        message_id: str | None = None,
        date: str | None = None,
    ) -> EmailMessage:
        """Return the message as the standard library's ``EmailMessage``.

        It is parsed (with ``email.policy.default``) from exactly the bytes that
        would be sent, so what you inspect is what the server would get.

        Args:
            default_sender: The From to use when the message has no sender.
            message_id: The Message-ID to write; a fresh one by default.
            date: The Date to write; now by default.
        """
        sender = Address.parse(default_sender, field="sender")
        raw = self.to_bytes(sender, message_id=message_id, date=date)
        parser = BytesParser(policy=email.policy.default)
        return parser.parsebytes(raw)


def _check_body(value: object, *, field: str) -> None:
    # Bodies may hold any text (they are transfer-encoded), but must be text.
    if not isinstance(value, str):
        raise MessageError(
            f"{field}: expected text, got {type(value).__name__}", field=field
        )
    check_encodable(value, field=field)


def _check_text(value: object, *, field: str) -> None:
    if not isinstance(value, str):
        raise MessageError(
            f"{field}: expected text, got {type(value).__name__}", field=field
        )
    check_header_text(value, field=field)


def _checked_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    checked: list[tuple[str, str]] = []
    for name, value in items:
        field = f"headers[{name!r}]"
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise HeaderInjectionError(
                f"{field}: invalid header name {name!r}", field=field
            )
        if name.lower() in RESERVED_HEADERS:
            raise MessageError(
                f"{field}: set {name} through the message's own field, not headers",
                field=field,
            )
        _check_text(value, field=field)
        checked.append((name, value))
    return tuple(checked)


def _checked_attachments(
    attachments: Iterable[Attachment] | None,
) -> tuple[Attachment, ...]:
    if attachments is None:
        return ()
    if isinstance(attachments, Attachment | str | bytes):
        raise MessageError(
            "attachments: expected a list of Attachment", field="attachments"
        )
    checked = tuple(attachments)
    content_ids: set[str] = set()
    for index, attachment in enumerate(checked):
        field = f"attachments[{index}]"
        if not isinstance(attachment, Attachment):
            raise MessageError(
                f"{field}: expected an Attachment, got {type(attachment).__name__}",
                field=field,
            )
        if attachment.content_id is not None:
            if attachment.content_id in content_ids:
                raise MessageError(
                    f"{field}: Content-ID {attachment.content_id!r} is used twice",
                    field=field,
                )
            content_ids.add(attachment.content_id)
    return checked


def _checked_unsubscribe(
    unsubscribe: str | Iterable[str] | Unsubscribe | None,
    headers: tuple[tuple[str, str], ...],
) -> Unsubscribe | None:
    if unsubscribe is None:
        return None
    parsed = Unsubscribe.parse(unsubscribe)
    for name, _ in headers:
        if name.lower() in {"list-unsubscribe", "list-unsubscribe-post"}:
            raise MessageError(
                f"headers[{name!r}]: set by unsubscribe=; give it once",
                field=f"headers[{name!r}]",
            )
    return parsed
