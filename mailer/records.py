"""Define SentMail: one delivered message as every test double records it."""

from __future__ import annotations

import contextlib
import email.header
import email.policy
import email.utils
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.parser import BytesParser
from functools import cached_property
from typing import Literal, cast

from mailer.content.message import Envelope

_PARSER = BytesParser(policy=email.policy.default)
_ESCAPED = re.compile(r"[\udc80-\udcff]")
# RFC 5322 specials: a display name holding one is shown quoted.
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender"})

SessionTLS = Literal["none", "starttls", "tls"]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the test SMTP server knew about the session a message came in on.

    Attributes:
        number: The session's order on its server, from 1 (equal numbers: the
            client reused one connection).
        peer: The client's address and port.
        helo: The name the client gave in EHLO or HELO.
        tls: ``"none"``, ``"starttls"`` (upgraded in the session) or ``"tls"``
            (implicit TLS from the first byte).
        tls_version: The TLS protocol version (``"TLSv1.3"``), if TLS was used.
        auth_username: The user the client logged in as, if it did.
    """

    number: int
    peer: tuple[str, int]
    helo: str | None
    tls: SessionTLS
    tls_version: str | None
    auth_username: str | None


def _bare(addresses: object) -> tuple[str, ...]:
    if isinstance(addresses, RawHeader):
        # The structured parser failed on it: the lenient one still finds the
        # addresses (a hostile header must not hide the others).
        try:
            pairs = email.utils.getaddresses([addresses.text])
        except Exception:  # noqa: BLE001 - as lenient as it gets: none found
            return ()
        return tuple(as_utf8(address) for _, address in pairs if address)
    header_addresses = getattr(addresses, "addresses", ())
    return tuple(as_utf8(address.addr_spec) for address in header_addresses)


class RawHeader(str):
    """A header value the standard library's parser could not read, as written.

    ``email.policy.default`` raises (IndexError, AttributeError, TypeError...)
    on some hostile values, e.g. ``Reply-To: .<``, or a Cc of one undecodable
    byte and ``@``. Every reader here falls back to the raw text, so one such
    header never hides the message.
    """

    @property
    def text(self) -> str:
        """Return the value unfolded."""
        return str(self).replace("\r\n", "").replace("\n", "")


def header_value(message: EmailMessage, name: str) -> object | None:
    """Return a header's parsed value, its raw text if it cannot be parsed, or None."""
    try:
        return message.get(name)
    except Exception:  # noqa: BLE001 - stdlib parser bugs on hostile values
        wanted = name.lower()
        raw = next((v for k, v in message.raw_items() if k.lower() == wanted), None)
        return None if raw is None else RawHeader(raw)


def header_items(message: EmailMessage) -> list[tuple[str, str, object]]:
    """Return every header as ``(name, raw, parsed)``; parsed is raw when it fails."""
    items: list[tuple[str, str, object]] = []
    for name, raw in message.raw_items():
        try:
            value: object = message.policy.header_fetch_parse(name, raw)
        except Exception:  # noqa: BLE001 - stdlib parser bugs on hostile values
            value = RawHeader(raw)
        items.append((name, raw, value))
    return items


def read_headers(raw: bytes) -> EmailMessage:
    """Parse only the header of a message (never recurses into its MIME parts)."""
    return _PARSER.parsebytes(raw, headersonly=True)


def addresses_in(message: EmailMessage, name: str) -> tuple[str, ...]:
    """Return the bare addresses of header ``name`` (lenient when it is hostile)."""
    return _bare(header_value(message, name))


def unreadable(error: BaseException) -> str:
    """Say in a few words why the standard library could not read a message."""
    if isinstance(error, RecursionError):
        return "its MIME parts are nested too deeply to read"
    return f"it cannot be parsed ({type(error).__name__})"


def header_text(message: EmailMessage, name: str) -> str:
    """Return a header's decoded text ("" when absent), whatever it holds."""
    value = header_value(message, name)
    if value is None:
        return ""
    return as_utf8(
        _unstructured(value.text) if isinstance(value, RawHeader) else str(value)
    )


def _unstructured(raw: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except Exception:  # noqa: BLE001 - shown as written
        return raw


def as_utf8(text: str) -> str:
    r"""Return ``text`` with UTF-8 bytes that the parser left escaped decoded.

    ``BytesParser`` reads header bytes as ASCII and keeps every other byte as
    a surrogate escape, so an RFC 6532 header (``To: zoë@example.test``, as
    sent with SMTPUTF8) would read ``'zo\udcc3\udcab@...'``.
    """
    if not _ESCAPED.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def decode_address_header(raw: str) -> str:
    """Return an address header's display text, decoding RFC 2047 words per RFC 2047.

    Python 3.11 to 3.13 keep the space between two adjacent encoded words in
    a display name (gh-92081): ``=?utf-8?q?Nod?= =?utf-8?q?emailer?=`` reads
    ``Nod emailer``. RFC 2047 6.2 drops it, as every mail client does.
    """
    shown = []
    for name, address in email.utils.getaddresses([raw.replace("\r\n", "")]):
        decoded = str(email.header.make_header(email.header.decode_header(name)))
        if not decoded:
            shown.append(address)
        elif _SPECIALS.search(decoded):
            escaped = decoded.replace("\\", "\\\\").replace('"', '\\"')
            shown.append(f'"{escaped}" <{address}>')
        else:
            shown.append(f"{decoded} <{address}>")
    return ", ".join(shown)


def leaf_parts(message: EmailMessage) -> Iterator[EmailMessage]:
    """Yield every part that is not a container, depth first.

    An attached message (``message/rfc822``) is one part, as a mail client
    shows it: its own parts are not the outer message's attachments.
    """
    if message.is_multipart() and message.get_content_type() != "message/rfc822":
        for part in message.iter_parts():
            yield from leaf_parts(cast(EmailMessage, part))
        return
    yield message


def part_filename(part: EmailMessage) -> str | None:
    """Return a part's file name, or None (also when its header cannot be read)."""
    try:
        filename = part.get_filename()
    except Exception:  # noqa: BLE001 - stdlib parser bugs on hostile values
        return None
    return None if filename is None else as_utf8(filename)


def part_disposition(part: EmailMessage) -> str | None:
    """Return ``attachment``, ``inline`` or None (also when it cannot be read)."""
    try:
        return part.get_content_disposition()
    except Exception:  # noqa: BLE001 - stdlib parser bugs on hostile values
        return None


def part_bytes(part: EmailMessage) -> bytes:
    """Return a part's content: decoded bytes, or an attached message's own bytes."""
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        # Parsed into a message: write it back as it came (no refolding, CRLF).
        out = io.BytesIO()
        generator = BytesGenerator(
            out,
            mangle_from_=False,
            maxheaderlen=0,
            policy=email.policy.compat32.clone(linesep="\r\n"),
        )
        for inner in cast(list[EmailMessage], part.get_payload()):
            generator.flatten(inner)
        return out.getvalue()
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def comparable_address(address: str) -> str:
    """Return a form of a bare address in which equal addresses are equal.

    Case is folded and the domain is put in its ASCII (IDNA) form, because the
    envelope carries ``xn--`` domains where the headers may show Unicode.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return address.casefold()
    # A name IDNA cannot encode is compared as it is.
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}".casefold()


@dataclass(frozen=True, slots=True)
class SentAttachment:
    """One attachment or inline part of a sent message.

    Attributes:
        filename: Its file name, if it has one.
        content_type: Its MIME type (``"application/pdf"``).
        content: Its decoded bytes.
        disposition: ``"attachment"``, ``"inline"``, or None when not given.
        content_id: Its Content-ID without angle brackets, if it has one.
    """

    filename: str | None
    content_type: str
    content: bytes
    disposition: str | None = None
    content_id: str | None = None

    @property
    def size(self) -> int:
        """Return the decoded size in bytes."""
        return len(self.content)


@dataclass(frozen=True, slots=True)
class DKIMSignatureInfo:
    """What the first DKIM-Signature header of a message says (not whether it verifies).

    Attributes:
        domain: The signing domain (``d=``).
        selector: The selector (``s=``): the key is at ``S._domainkey.D``.
        algorithm: ``rsa-sha256`` or ``ed25519-sha256`` (``a=``).
        signed_headers: The signed header names, in order (``h=``), lower case.
    """

    domain: str
    selector: str
    algorithm: str
    signed_headers: tuple[str, ...]


@dataclass(frozen=True)
class SentMail:
    """A message as it was handed over: the envelope and the exact bytes.

    The same record comes from the in-memory transport, the mock transport and
    the local SMTP inbox, so the same assertions work on all of them.

    Attributes:
        envelope: MAIL FROM and RCPT TO (the only place Bcc recipients appear).
        raw: The exact message bytes (DATA content, without dot-stuffing).
        mail_options: ESMTP options sent with MAIL FROM (``SIZE=...``).
        session: TLS and AUTH facts, from the test SMTP server only.
        transcript: The session's dialogue up to this message's final reply,
            one line each, ``"C: MAIL FROM:<a@example.test>"`` or
            ``"S: 250 OK"`` (AUTH arguments hidden); test SMTP server only.
    """

    envelope: Envelope
    raw: bytes
    mail_options: tuple[str, ...] = field(default=())
    session: SessionInfo | None = None
    transcript: tuple[str, ...] = ()

    @cached_property
    def message(self) -> EmailMessage:
        """Return the message parsed with ``email.policy.default``."""
        return _PARSER.parsebytes(self.raw)

    @property
    def subject(self) -> str:
        """Return the decoded Subject ("" when absent)."""
        return header_text(self.message, "subject")

    @property
    def from_(self) -> tuple[str, ...]:
        """Return the From header's bare addresses."""
        return _bare(header_value(self.message, "from"))

    @property
    def to(self) -> tuple[str, ...]:
        """Return the To header's bare addresses."""
        return _bare(header_value(self.message, "to"))

    @property
    def cc(self) -> tuple[str, ...]:
        """Return the Cc header's bare addresses."""
        return _bare(header_value(self.message, "cc"))

    @property
    def bcc(self) -> tuple[str, ...]:
        """Return envelope recipients that are in neither To nor Cc.

        Addresses are compared without case and with IDNA domains, so
        ``Ann@Example.TEST`` in To hides ``ann@example.test`` on the envelope.
        """
        shown = {comparable_address(a) for a in (*self.to, *self.cc)}
        return tuple(
            r for r in self.envelope.rcpt_tos if comparable_address(r) not in shown
        )

    @property
    def reply_to(self) -> tuple[str, ...]:
        """Return the Reply-To header's bare addresses."""
        return _bare(header_value(self.message, "reply-to"))

    @property
    def mail_from(self) -> str:
        """Return the envelope sender (MAIL FROM): ``self.envelope.mail_from``."""
        return self.envelope.mail_from

    @property
    def rcpt_tos(self) -> tuple[str, ...]:
        """Return the envelope recipients (RCPT TO), Bcc included, in order.

        The same as ``self.envelope.rcpt_tos``; ``to`` and ``cc`` are the
        headers', which never show Bcc.
        """
        return self.envelope.rcpt_tos

    @property
    def message_id(self) -> str | None:
        """Return the Message-ID header, angle brackets included."""
        value = header_value(self.message, "message-id")
        return None if value is None else as_utf8(str(value).strip())

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Return every header field as ``(name, decoded value)``, in order."""
        return tuple(
            (name, _decoded(name, raw, value))
            for name, raw, value in header_items(self.message)
        )

    def header(self, name: str) -> str | None:
        """Return the decoded value of header ``name`` (any case), if present."""
        wanted = name.lower()
        for field_name, raw, value in header_items(self.message):
            if field_name.lower() == wanted:
                return _decoded(field_name, raw, value)
        return None

    @property
    def attachments(self) -> tuple[SentAttachment, ...]:
        """Return every part with a file name or a Content-ID, inline ones included.

        In the order they appear in the message; the text and HTML bodies
        are not listed.
        """
        found = []
        for part in leaf_parts(self.message):
            filename = part_filename(part)
            content_id = header_value(part, "content-id")
            if filename is None and content_id is None:
                continue
            found.append(
                SentAttachment(
                    filename=None if filename is None else as_utf8(filename),
                    content_type=part.get_content_type(),
                    content=part_bytes(part),
                    disposition=part_disposition(part),
                    content_id=(
                        None if content_id is None else str(content_id).strip("<> ")
                    ),
                )
            )
        return tuple(found)

    @property
    def dkim(self) -> DKIMSignatureInfo | None:
        """Return what the first DKIM-Signature header says, or None if unsigned."""
        raw = next(
            (v for k, v in self.message.raw_items() if k.lower() == "dkim-signature"),
            None,
        )
        if raw is None:
            return None
        tags: dict[str, str] = {}
        for item in re.sub(r"\s+", "", str(raw)).split(";"):
            key, _, value = item.partition("=")
            if key:
                tags[key] = value
        return DKIMSignatureInfo(
            domain=tags.get("d", ""),
            selector=tags.get("s", ""),
            algorithm=tags.get("a", ""),
            signed_headers=tuple(h.lower() for h in tags.get("h", "").split(":") if h),
        )

    def extract(self, pattern: str) -> str:
        r"""Return what ``pattern`` finds in the text (else HTML) body.

        The first group if the pattern has one, else the whole match: handy for
        reset codes and links (``mail.extract(r"code: (\d{6})")``).

        Raises:
            AssertionError: The pattern is in neither body.
        """
        for body in (self.text, self.html):
            if body is None:
                continue
            found = re.search(pattern, body)
            if found is not None:
                return found.group(1) if found.re.groups else found.group(0)
        raise AssertionError(f"{pattern!r} not found in the message {self.subject!r}")

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
        try:
            content = cast(str, part.get_content())
        except LookupError:
            # An unknown charset (a hostile or an exotic one): read it as UTF-8.
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            content = data.decode("utf-8", "replace")
        return content.replace("\r\n", "\n")


def _decoded(name: str, raw: str, value: object) -> str:
    if isinstance(value, RawHeader):
        return as_utf8(_unstructured(value.text))
    if name.lower() in ADDRESS_HEADERS and "=?" in raw:
        try:
            return decode_address_header(as_utf8(raw))
        except Exception:  # noqa: BLE001 - stdlib parser bugs: shown as parsed
            return as_utf8(str(value))
    return as_utf8(str(value))
