"""Define Attachment: a file to send with a message, encoded once however often sent.

An attachment holds bytes, a path (read when the message is first serialised,
not when the attachment is made) or the contents of a binary file object. Its
MIME part (headers and base64 body) is built the first time a message carrying
it is serialised and kept on the object, so the same attachment sent to 10,000
recipients is read and encoded once.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import re
import stat
import threading
import urllib.parse
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import BinaryIO, Literal

from mailer.content import mime
from mailer.content.addresses import excerpt
from mailer.exceptions import HeaderInjectionError, MessageError

Disposition = Literal["attachment", "inline"]
DISPOSITIONS = ("attachment", "inline")
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Longest file name accepted, in characters (most file systems stop at 255).
MAX_FILENAME_LENGTH = 255
# Characters refused in a file name: line breaks could start a header, quotes and
# backslashes end or escape the quoted parameter, and a separator makes the
# receiving client save the file somewhere else (CVE-class "path in filename").
_HOSTILE_FILENAME = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029"\\/]')
# RFC 2045 5.1: type "/" subtype, both tokens.
_TYPE_NAME = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_CONTENT_TYPE = re.compile(rf"{_TYPE_NAME}/{_TYPE_NAME}")
# RFC 5322 msg-id without the angle brackets: dot-atom "@" dot-atom.
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_CONTENT_ID = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*")
# RFC 2231 parameter values are cut into pieces this long (before encoding).
_PARAMETER_PIECE = 60
_PLAIN_FILENAME = re.compile(r"[\x20-\x7e]+")
# RFC 2231 attribute-char: what may stay unescaped in an extended value.
_ATTRIBUTE_SAFE = "!#$&+-.^_`|~"
# RFC 2046 5.2.1: a message/rfc822 body is never base64 or quoted-printable, so
# it goes as it is (7bit), which it can only when it is 7-bit text with CRLF
# line ends and lines of at most 998 octets (RFC 5322 2.1.1).
MESSAGE_RFC822 = "message/rfc822"
_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_LONGEST_LINE = 998


def check_filename(filename: object, *, field: str = "attachment.filename") -> str:
    """Return ``filename`` if it is safe to send, else raise naming ``field``.

    Raises:
        HeaderInjectionError: The name holds a line break or control character.
        MessageError: The name is empty, too long, ``.``/``..``, or holds a
            quote, a backslash or a slash.
    """
    if not isinstance(filename, str):
        raise MessageError(
            f"{field}: expected text, got {type(filename).__name__}", field=field
        )
    if not filename.strip():
        raise MessageError(f"{field}: a file name is required", field=field)
    if len(filename) > MAX_FILENAME_LENGTH:
        raise MessageError(
            f"{field}: {len(filename)} characters, over {MAX_FILENAME_LENGTH}",
            field=field,
        )
    found = _HOSTILE_FILENAME.search(filename)
    if found is not None:
        char = found.group()
        error = MessageError if char in '"\\/' else HeaderInjectionError
        raise error(
            f"{field}: {char!r} is not allowed in a file name "
            f"{excerpt(filename, found.start())}; rename the file",
            field=field,
        )
    if filename in {".", ".."}:
        raise MessageError(f"{field}: {filename!r} is not a file name", field=field)
    try:
        filename.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError(
            f"{field}: {excerpt(filename)} is not valid text (a lone surrogate)",
            field=field,
        ) from None
    return filename


def _check_content_type(value: str) -> str:
    if not _CONTENT_TYPE.fullmatch(value):
        raise MessageError(
            f"attachment.content_type: {excerpt(value)} is not a MIME type "
            "like 'application/pdf'",
            field="attachment.content_type",
        )
    value = value.lower()
    major = value.partition("/")[0]
    # A multipart body needs a boundary of its own and other message types
    # may not be encoded (RFC 2046 5.1, 5.2): a file sent with such a type
    # arrives as a broken MIME tree (Python's parser reads the base64 text
    # as a message and finds no attachment at all).
    if major == "multipart" or (major == "message" and value != MESSAGE_RFC822):
        raise MessageError(
            f"attachment.content_type: {value!r} cannot be sent as an attachment; "
            f"use {DEFAULT_CONTENT_TYPE!r} (or {MESSAGE_RFC822!r} for a whole "
            "message)",
            field="attachment.content_type",
        )
    return value


def _guess_content_type(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    if guessed is None or guessed.partition("/")[0] in ("message", "multipart"):
        # A .eml file is guessed message/rfc822, which may only go unencoded
        # (RFC 2046 5.2.1); as a plain file it arrives byte for byte, whatever
        # its line ends. Say content_type="message/rfc822" to forward it.
        return DEFAULT_CONTENT_TYPE
    return guessed


def check_message_content(data: bytes) -> None:
    """Raise unless ``data`` can be a message/rfc822 body as it is (7bit).

    Raises:
        MessageError: Not 7-bit, a bare CR or LF, or a line over 998 octets
            (field ``attachment.content_type``).
    """
    problem = None
    if not data.isascii() or b"\0" in data:
        problem = "holds 8-bit bytes or NUL"
    elif _BARE_LINE_END.search(data):
        problem = "has line ends other than CRLF"
    elif max(map(len, data.split(b"\r\n")), default=0) > _LONGEST_LINE:
        problem = f"has a line over {_LONGEST_LINE} octets"
    if problem is not None:
        raise MessageError(
            f"attachment.content_type: this {MESSAGE_RFC822} content {problem}, "
            "and such a part cannot be encoded (RFC 2046 5.2.1); send it as "
            f"content_type={DEFAULT_CONTENT_TYPE!r}",
            field="attachment.content_type",
        )


def _check_content_id(value: str) -> str:
    bare = value[1:-1] if value.startswith("<") and value.endswith(">") else value
    if not _CONTENT_ID.fullmatch(bare):
        raise HeaderInjectionError(
            f"attachment.content_id: {excerpt(value)} is not a Content-ID like "
            "'logo@example.test'",
            field="attachment.content_id",
        )
    return bare


class Attachment:
    """A file attached to a message: immutable, equal by value, encoded once.

    Make one from bytes, ``Attachment.from_path`` (read when first sent) or
    ``Attachment.from_file`` (a binary file object, read now)::

        invoice = Attachment(pdf_bytes, filename="invoice.pdf")
        logo = Attachment.from_path("logo.png", disposition="inline",
                                    content_id="logo@example.test")

    Reuse one object for every message that carries the same file: it is read
    and encoded the first time, and those bytes are reused after that.

    Args:
        content: The file's bytes.
        filename: The name the recipient sees (no path, no quotes, no line
            breaks); non-ASCII names are sent per RFC 2231 and RFC 2047.
        content_type: The MIME type; guessed from the file name when omitted.
        disposition: ``"attachment"`` (a download) or ``"inline"`` (shown in
            the body, with ``content_id``, for ``<img src="cid:...">``).
        content_id: The Content-ID (without angle brackets), for ``cid:`` URLs.

    Raises:
        MessageError: A field is invalid (the error names it).
    """

    __slots__ = (
        "_content",
        "_lock",
        "_part",
        "_path",
        "content_id",
        "content_type",
        "disposition",
        "filename",
    )

    filename: str
    content_type: str
    disposition: Disposition
    content_id: str | None
    _content: bytes | None
    _path: Path | None
    _part: tuple[bytes, bytes] | None
    _lock: threading.Lock

    def __init__(
        self,
        content: bytes,
        /,
        *,
        filename: str,
        content_type: str | None = None,
        disposition: Disposition = "attachment",
        content_id: str | None = None,
    ) -> None:
        if not isinstance(content, bytes | bytearray | memoryview):
            raise MessageError(
                "attachment.content: expected bytes, got "
                f"{type(content).__name__} (use Attachment.from_path for a file)",
                field="attachment.content",
            )
        self._setup(
            bytes(content), None, filename, content_type, disposition, content_id
        )

    @classmethod
    def from_path(
        cls,
        path: str | PathLike[str],
        /,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        disposition: Disposition = "attachment",
        content_id: str | None = None,
    ) -> Attachment:
        """Return an attachment read from ``path`` when a message is first serialised.

        Args:
            path: The file.
            filename: The name shown; default the file's own name.
            content_type: The MIME type; guessed from the name when omitted.
            disposition: ``"attachment"`` or ``"inline"``.
            content_id: The Content-ID for ``cid:`` URLs.
        """
        resolved = Path(path)
        attachment = cls.__new__(cls)
        attachment._setup(
            None,
            resolved,
            resolved.name if filename is None else filename,
            content_type,
            disposition,
            content_id,
        )
        return attachment

    @classmethod
    def from_file(
        cls,
        file: BinaryIO,
        /,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        disposition: Disposition = "attachment",
        content_id: str | None = None,
    ) -> Attachment:
        """Return an attachment holding what remains to be read from ``file``.

        The file is read now (a stream cannot be read again for each message).

        Args:
            file: A binary file object (``open(..., "rb")``, ``io.BytesIO``).
            filename: The name shown; default the base name of ``file.name``.
            content_type: The MIME type; guessed from the name when omitted.
            disposition: ``"attachment"`` or ``"inline"``.
            content_id: The Content-ID for ``cid:`` URLs.
        """
        if filename is None:
            name = getattr(file, "name", None)
            filename = Path(name).name if isinstance(name, str) else ""
        data = file.read()
        if not isinstance(data, bytes):
            raise MessageError(
                "attachment.file: expected a binary file (open it with 'rb')",
                field="attachment.file",
            )
        return cls(
            data,
            filename=filename,
            content_type=content_type,
            disposition=disposition,
            content_id=content_id,
        )

    def _setup(
        self,
        content: bytes | None,
        path: Path | None,
        filename: str,
        content_type: str | None,
        disposition: str,
        content_id: str | None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "filename", check_filename(filename))
        if content_type is None:
            content_type = _guess_content_type(filename)
        set_(self, "content_type", _check_content_type(content_type))
        if content is not None and self.content_type == MESSAGE_RFC822:
            check_message_content(content)
        if disposition not in DISPOSITIONS:
            raise MessageError(
                f"attachment.disposition: {disposition!r}; use 'attachment' or "
                "'inline'",
                field="attachment.disposition",
            )
        set_(self, "disposition", disposition)
        set_(
            self,
            "content_id",
            None if content_id is None else _check_content_id(content_id),
        )
        set_(self, "_content", content)
        set_(self, "_path", path)
        set_(self, "_part", None)
        set_(self, "_lock", threading.Lock())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Attachment is immutable: cannot set {name!r}")

    @property
    def path(self) -> Path | None:
        """Return the file an attachment made ``from_path`` reads, else None."""
        return self._path

    def _key(self) -> tuple[object, ...]:
        source: object = self._content if self._path is None else self._path
        return (
            source,
            self.filename,
            self.content_type,
            self.disposition,
            self.content_id,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Attachment):
            return NotImplemented
        return self is other or self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        source = (
            f"path={str(self._path)!r}"
            if self._path is not None
            else f"{len(self._content or b''):,} bytes"
        )
        extras = ""
        if self.disposition != "attachment":
            extras += f", disposition={self.disposition!r}"
        if self.content_id is not None:
            extras += f", content_id={self.content_id!r}"
        return (
            f"Attachment({source}, filename={self.filename!r}, "
            f"content_type={self.content_type!r}{extras})"
        )

    def read(self) -> bytes:
        """Return the attachment's bytes (reading its file, for ``from_path``).

        Raises:
            MessageError: The file cannot be read (field ``attachment.path``).
        """
        if self._content is not None:
            return self._content
        assert self._path is not None  # noqa: S101 - one of the two is set
        try:
            # O_NONBLOCK: opening a FIFO with no writer would wait for ever.
            descriptor = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
        except (OSError, ValueError) as exc:
            raise self._unreadable(exc) from None
        with open(descriptor, "rb", closefd=True) as handle:
            try:
                self._check_regular(os.fstat(descriptor).st_mode)
                return handle.read()
            except OSError as exc:
                raise self._unreadable(exc) from None

    def _unreadable(self, error: OSError | ValueError) -> MessageError:
        reason = (
            error.strerror or type(error).__name__
            if isinstance(error, OSError)
            else "not a file name"
        )
        return MessageError(
            f"attachment.path: cannot read {str(self._path)!r}: {reason}",
            field="attachment.path",
        )

    def _check_regular(self, mode: int) -> None:
        # A device or a FIFO has no size to check against the limits, and
        # /dev/zero or /dev/urandom would be read until memory runs out.
        if not stat.S_ISREG(mode):
            raise MessageError(
                f"attachment.path: {str(self._path)!r} is not a regular file "
                "(a device, a pipe or a folder); attach files only",
                field="attachment.path",
            )

    def size(self) -> int:
        """Return the size in bytes, before encoding (a file is not read for it).

        Raises:
            MessageError: The file does not exist or cannot be read.
        """
        if self._content is not None:
            return len(self._content)
        assert self._path is not None  # noqa: S101 - one of the two is set
        try:
            status = self._path.stat()
        except (OSError, ValueError) as exc:
            raise self._unreadable(exc) from None
        self._check_regular(status.st_mode)
        return status.st_size

    def encoded_size(self) -> int:
        """Return the size of the base64 body on the wire, without encoding it.

        Raises:
            MessageError: The file does not exist or cannot be read.
        """
        if self._part is not None:
            return len(self._part[1])
        encoded = 4 * ((self.size() + 2) // 3)
        lines = (encoded + 75) // 76
        return encoded + 2 * max(lines - 1, 0)

    def mime_part(self) -> tuple[bytes, bytes]:
        """Return the attachment's MIME part: its header fields and base64 body.

        Built once and kept: every message carrying this object shares these
        bytes. Text files are base64-encoded too, so their bytes (line ends
        included) arrive exactly as they are.

        Raises:
            MessageError: A file attachment cannot be read.
        """
        part = self._part
        if part is not None:
            return part
        with self._lock:
            if self._part is None:
                object.__setattr__(self, "_part", self._build_part())
            built = self._part
        assert built is not None  # noqa: S101 - set just above
        return built

    @property
    def is_encoded(self) -> bool:
        """Return whether the part's body is base64 (every type but message/rfc822).

        A message/rfc822 body goes as it is, so whoever joins parts must make
        sure that no boundary occurs in it.
        """
        return self.content_type != MESSAGE_RFC822

    def _build_part(self) -> tuple[bytes, bytes]:
        data = self.read()
        if not self.is_encoded:
            check_message_content(data)
            # In a multipart, the CRLF before the next boundary belongs to the
            # boundary: the body is the message exactly, final CRLF included.
            return "".join(self.part_headers()).encode("ascii"), data
        encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
        # In a multipart, the CRLF before the next boundary belongs to it.
        body = encoded[:-2] if encoded.endswith(b"\r\n") else encoded
        return "".join(self.part_headers()).encode("ascii"), body

    def part_headers(self) -> list[str]:
        """Return the part's header fields, each ending with CRLF."""
        fields = [
            mime.fold(
                "Content-Type",
                [f"{self.content_type};", *_legacy_name(self.filename)],
            ),
            f"Content-Transfer-Encoding: {'base64' if self.is_encoded else '7bit'}\r\n",
            mime.fold(
                "Content-Disposition",
                [f"{self.disposition};", *filename_parameter(self.filename)],
            ),
        ]
        if self.content_id is not None:
            fields.append(f"Content-ID: <{self.content_id}>\r\n")
        return fields


def filename_parameter(filename: str) -> list[str]:
    """Return fold tokens for ``filename=`` (RFC 2183, RFC 2231 when needed).

    Plain ASCII names are quoted; other names use RFC 2231's ``filename*=``
    with UTF-8 percent-encoding, cut into numbered pieces when long. So does
    a name holding ``=?``: many readers (Python's among them) decode RFC 2047
    words even inside a quoted parameter, so ``"=?utf-8?q?=2E=2E=2Fx?="``
    would arrive as ``../x``, past the checks on the name as written.
    """
    is_plain = _is_plain_filename(filename)
    if is_plain and len(filename) <= _PARAMETER_PIECE:
        return [f'filename="{filename}"']
    quoted = urllib.parse.quote(filename, safe=_ATTRIBUTE_SAFE)
    if len(quoted) <= _PARAMETER_PIECE and not is_plain:
        return [f"filename*=utf-8''{quoted}"]
    pieces: list[str] = []
    current = ""
    for char in filename:
        encoded = urllib.parse.quote(char, safe=_ATTRIBUTE_SAFE)
        if current and len(current) + len(encoded) > _PARAMETER_PIECE:
            pieces.append(current)
            current = ""
        current += encoded
    pieces.append(current)
    tokens = []
    for number, piece in enumerate(pieces):
        charset = "utf-8''" if number == 0 else ""
        separator = ";" if number < len(pieces) - 1 else ""
        tokens.append(f"filename*{number}*={charset}{piece}{separator}")
    return tokens


def _is_plain_filename(filename: str) -> bool:
    return bool(_PLAIN_FILENAME.fullmatch(filename)) and "=?" not in filename


def _legacy_name(filename: str) -> list[str]:
    # Content-Type's name= is what old clients (Outlook before 2010, some
    # webmail) show; they do not read RFC 2231, but they do read RFC 2047
    # encoded words inside the quotes, so non-ASCII names go that way (and
    # so do names holding "=?", which would otherwise be decoded).
    if _is_plain_filename(filename):
        return [f'name="{filename}"']
    return [f'name="{" ".join(mime.encoded_words(filename))}"']


def total_size(attachments: Iterable[Attachment]) -> int:
    """Return the attachments' combined size before encoding."""
    return sum(attachment.size() for attachment in attachments)
