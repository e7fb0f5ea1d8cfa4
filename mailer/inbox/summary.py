"""Describe a stored message in a few fields: what the list shows and search reads.

A ``StoredMail`` is built once, when the message arrives, and saved beside its
``.eml`` file as JSON, so a restart reloads the list without parsing any mail.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mailer.inbox.markup import read_markup
from mailer.inbox.parts import other_parts
from mailer.records import (
    SentMail,
    SessionInfo,
    addresses_in,
    comparable_address,
    header_text,
    read_headers,
    unreadable,
)

# Search reads this much of each message's text; it keeps 1,000 messages in a
# few megabytes whatever their size.
SEARCH_TEXT_CHARS = 32_768
SNIPPET_CHARS = 160
_SPACES = re.compile(r"\s+")
_FIELDS = ("from", "to", "subject")


@dataclass(frozen=True)
class StoredMail:
    """One message in the inbox, as the list and the search see it.

    Attributes:
        id: Its name in the inbox folder (``ID.eml``).
        received_at: When it arrived (seconds since the epoch).
        size: Its size in bytes.
        mail_from: MAIL FROM.
        rcpt_tos: Every RCPT TO, in order.
        subject: The decoded Subject.
        sender: The From header, decoded.
        to: The To header, decoded.
        cc: The Cc header, decoded.
        bcc: Envelope recipients in neither To nor Cc.
        has_attachments: Whether it carries a part that is not a body.
        snippet: The start of its text.
        read: Whether it was opened.
        remote_images: Whether the user allowed its remote images.
        session: TLS, AUTH and client facts of the session it came in on.
        search_text: Lower-cased addresses, subject and text, for search.
    """

    id: str
    received_at: float
    size: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str = ""
    sender: str = ""
    to: str = ""
    cc: str = ""
    bcc: tuple[str, ...] = ()
    has_attachments: bool = False
    snippet: str = ""
    read: bool = False
    remote_images: bool = False
    session: SessionInfo | None = None
    search_text: str = field(default="", repr=False)

    def to_json(self) -> dict[str, Any]:
        """Return the fields as JSON-ready values (the saved and the API form)."""
        values = asdict(self)
        values["rcpt_tos"] = list(self.rcpt_tos)
        values["bcc"] = list(self.bcc)
        if self.session is not None:
            values["session"]["peer"] = list(self.session.peer)
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> StoredMail:
        """Rebuild a StoredMail saved by ``to_json``.

        Raises:
            KeyError, TypeError, ValueError: The values are not such a record.
        """
        session = values.get("session")
        info = None
        if session is not None:
            info = SessionInfo(**{**session, "peer": tuple(session["peer"])})
        known = set(cls.__dataclass_fields__)
        kept = {k: v for k, v in values.items() if k in known}
        return cls(
            **{
                **kept,
                "rcpt_tos": tuple(values["rcpt_tos"]),
                "bcc": tuple(values.get("bcc", ())),
                "session": info,
            }
        )

    def with_flags(
        self, *, read: bool | None = None, remote_images: bool | None = None
    ) -> StoredMail:
        """Return a copy with the given flags changed."""
        return replace(
            self,
            read=self.read if read is None else read,
            remote_images=self.remote_images
            if remote_images is None
            else remote_images,
        )


def summarise(
    mail: SentMail, *, id: str, received_at: float | None = None
) -> StoredMail:
    """Build the StoredMail of a received message (never fails for its content).

    A message the standard library cannot parse (MIME nested about 1,000 deep
    ends in RecursionError) is still kept and listed: its summary then comes
    from its header alone, and its snippet says why.
    """
    try:
        return _summarise(mail, id=id, received_at=received_at)
    except Exception as exc:  # noqa: BLE001 - the inbox keeps every message
        return _summarise_header(
            mail, id=id, received_at=received_at, problem=unreadable(exc)
        )


def _summarise_header(
    mail: SentMail, *, id: str, received_at: float | None, problem: str
) -> StoredMail:
    message = read_headers(mail.raw)
    shown = {
        comparable_address(a)
        for a in (*addresses_in(message, "to"), *addresses_in(message, "cc"))
    }
    subject = header_text(message, "subject")
    sender = header_text(message, "from")
    to = header_text(message, "to")
    cc = header_text(message, "cc")
    envelope = mail.envelope
    searchable = " ".join([subject, sender, to, cc, envelope.mail_from])
    return StoredMail(
        id=id,
        received_at=time.time() if received_at is None else received_at,
        size=len(mail.raw),
        mail_from=envelope.mail_from,
        rcpt_tos=tuple(envelope.rcpt_tos),
        subject=subject,
        sender=sender,
        to=to,
        cc=cc,
        bcc=tuple(r for r in envelope.rcpt_tos if comparable_address(r) not in shown),
        snippet=f"(cannot be shown: {problem}; the source is kept)",
        session=mail.session,
        search_text=" ".join([searchable, *envelope.rcpt_tos]).casefold(),
    )


def _summarise(mail: SentMail, *, id: str, received_at: float | None) -> StoredMail:
    message = mail.message
    text = mail.text
    html = mail.html
    if text is None and html is not None:
        text = read_markup(html).text
    text = text or ""
    attachments = other_parts(message)
    names = " ".join(p.filename or "" for p in attachments)
    sender = header_text(message, "from")
    to = header_text(message, "to")
    cc = header_text(message, "cc")
    searchable = " ".join(
        [
            mail.subject,
            sender,
            to,
            cc,
            mail.envelope.mail_from,
            *mail.envelope.rcpt_tos,
            names,
            text[:SEARCH_TEXT_CHARS],
        ]
    )
    return StoredMail(
        id=id,
        received_at=time.time() if received_at is None else received_at,
        size=len(mail.raw),
        mail_from=mail.envelope.mail_from,
        rcpt_tos=tuple(mail.envelope.rcpt_tos),
        subject=mail.subject,
        sender=sender,
        to=to,
        cc=cc,
        bcc=mail.bcc,
        has_attachments=any(not p.inline for p in attachments),
        snippet=_SPACES.sub(" ", text[: SNIPPET_CHARS * 2]).strip()[:SNIPPET_CHARS],
        session=mail.session,
        search_text=searchable.casefold(),
    )


@dataclass(frozen=True)
class Query:
    """A search: words that must all appear, and field filters.

    ``invoice from:shop is:unread has:attachment "two words"``: a bare word or
    quoted phrase is looked for in the addresses, subject and text;
    ``from:``, ``to:`` (To, Cc, Bcc and RCPT TO) and ``subject:`` look in one
    field; ``is:read``, ``is:unread`` and ``has:attachment`` filter. Case is
    ignored.
    """

    words: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    read: bool | None = None
    attachment: bool | None = None

    @classmethod
    def parse(cls, text: str) -> Query:
        """Read a search box's text (an unbalanced quote is taken literally)."""
        try:
            tokens = shlex.split(text)
        except ValueError:
            tokens = text.split()
        words: list[str] = []
        fields: list[tuple[str, str]] = []
        read: bool | None = None
        attachment: bool | None = None
        for token in tokens:
            name, colon, value = token.partition(":")
            name = name.lower()
            if colon and name in _FIELDS and value:
                fields.append((name, value.casefold()))
            elif colon and name == "is" and value.lower() in ("read", "unread"):
                read = value.lower() == "read"
            elif colon and name == "has" and value.lower().startswith("attachment"):
                attachment = True
            else:
                words.append(token.casefold())
        return cls(tuple(words), tuple(fields), read, attachment)

    @property
    def is_empty(self) -> bool:
        """Return whether the query matches everything."""
        return (
            not (self.words or self.fields)
            and self.read is None
            and (self.attachment is None)
        )

    def matches(self, mail: StoredMail) -> bool:
        """Return whether ``mail`` satisfies every part of the query."""
        if self.read is not None and mail.read != self.read:
            return False
        if self.attachment is not None and mail.has_attachments != self.attachment:
            return False
        for name, value in self.fields:
            if value not in _field(mail, name):
                return False
        return all(word in mail.search_text for word in self.words)


def _field(mail: StoredMail, name: str) -> str:
    if name == "from":
        return f"{mail.sender} {mail.mail_from}".casefold()
    if name == "to":
        return " ".join([mail.to, mail.cc, *mail.bcc, *mail.rcpt_tos]).casefold()
    return mail.subject.casefold()
