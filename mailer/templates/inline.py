"""Resolve ``{{ inline("logo.png") }}`` in body.html: a cid: URL and an inline part.

Images are looked up in the template set's folder (its locale folder first),
then in the templates directory, and never outside them: ``..``, absolute
paths and symlinks that point out are refused. Each file becomes one
Attachment per process (cached by path), so it is read and encoded once
whatever the batch size. Its Content-ID is derived from the file's bytes, so
a resumed batch sends the same one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from mailer.content.attachments import Attachment
from mailer.exceptions import MailerError, TemplateError

_CID_LABEL = re.compile(r"[^A-Za-z0-9-]+")


class InlineImages:
    """Collect the inline parts one rendering of body.html asks for.

    Args:
        template: The set name, for errors.
        folders: Where to look, in order (set folder, then templates directory).
        root: The templates directory: nothing outside it is read.
    """

    def __init__(self, template: str, folders: Sequence[Path], root: Path) -> None:
        self.template = template
        self.folders = tuple(folders)
        self.root = root
        self.attachments: list[Attachment] = []

    def __call__(self, name: object) -> str:
        """Return the ``cid:`` URL for image ``name`` and remember its part."""
        attachment = self._attachment(name)
        if attachment not in self.attachments:
            self.attachments.append(attachment)
        return f"cid:{attachment.content_id}"

    def _attachment(self, name: object) -> Attachment:
        if not isinstance(name, str) or not name:
            raise self._error(f"inline() takes a file name, not {name!r}")
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise self._error(
                f"inline({name!r}): the path must stay inside the template folder"
            )
        for folder in self.folders:
            candidate = folder / relative
            if not candidate.is_file():
                continue
            resolved = candidate.resolve()
            if not resolved.is_relative_to(self.root):
                # A symlink pointing out of the templates directory.
                raise self._error(
                    f"inline({name!r}): {candidate} points outside the templates "
                    "directory"
                )
            try:
                return inline_attachment(resolved)
            except MailerError as exc:
                raise self._error(f"inline({name!r}): {exc}") from None
        where = ", ".join(str(folder) for folder in self.folders)
        raise self._error(f"inline({name!r}): no such file in {where}")

    def _error(self, text: str) -> TemplateError:
        return TemplateError(
            f"template {self.template!r}: body.html: {text}",
            template=f"{self.template}/body.html",
        )


@lru_cache(maxsize=256)
def inline_attachment(path: Path) -> Attachment:
    """Return the inline Attachment for an image file (one object per path).

    Raises:
        MessageError: The file cannot be read or its name cannot be sent.
    """
    data = Attachment.from_path(path).read()
    digest = hashlib.sha256(data).hexdigest()[:16]
    label = _CID_LABEL.sub("-", path.stem).strip("-")[:40] or "image"
    return Attachment(
        data,
        filename=path.name,
        disposition="inline",
        content_id=f"{label}.{digest}@inline.mailer",
    )
