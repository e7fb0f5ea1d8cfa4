"""Render template sets (subject, text and HTML) with Jinja2 into Messages.

A template set is a folder ``TEMPLATES_DIR/NAME/`` holding ``subject.txt``,
``body.txt`` and optionally ``body.html``. Includes and layouts are looked up in
the set's own folder first, then in the templates directory. Each set gets one
Jinja2 environment per process, so its templates are compiled once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from mailer.config.settings import MailerSettings
from mailer.content.addresses import Address
from mailer.content.message import AddressInput, Message
from mailer.exceptions import (
    MailerError,
    TemplateError,
    TemplateNotFoundError,
    TemplateSyntaxError,
    UndefinedVariableError,
)

SUBJECT_FILE = "subject.txt"
TEXT_FILE = "body.txt"
HTML_FILE = "body.html"

# A set name is one folder name: no separators, no "..", nothing hidden.
_SET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")
_UNDEFINED_ATTRIBUTE = re.compile(r"has no attribute '([^']+)'")


@dataclass(frozen=True, slots=True)
class TemplateSet:
    """The compiled templates of one set."""

    name: str
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template | None


def load_template_set(name: str, templates_dir: Path | str) -> TemplateSet:
    """Return the compiled template set ``name`` (cached for the process).

    Args:
        name: The set's folder name.
        templates_dir: The folder holding the sets.

    Raises:
        TemplateNotFoundError: The set or one of its required files is missing.
        TemplateSyntaxError: A template does not parse (the error has the line).
    """
    if not _SET_NAME.fullmatch(name):
        raise TemplateNotFoundError(
            f"template {name!r}: not a template set name", template=name
        )
    return _load_cached(name, Path(templates_dir).resolve())


@lru_cache(maxsize=64)
def _load_cached(name: str, root: Path) -> TemplateSet:
    return compile_template_set(name, root)


def compile_template_set(name: str, templates_dir: Path | str) -> TemplateSet:
    """Compile template set ``name`` from its files now, bypassing the cache.

    For tools that show templates while they are edited (the inbox's
    previews); ``load_template_set`` compiles each set once per process.

    Raises:
        TemplateNotFoundError: The set or one of its required files is missing.
        TemplateSyntaxError: A template does not parse (the error has the line).
    """
    if not _SET_NAME.fullmatch(name):
        raise TemplateNotFoundError(
            f"template {name!r}: not a template set name", template=name
        )
    root = Path(templates_dir).resolve()
    folder = root / name
    if not root.is_dir():
        raise TemplateNotFoundError(
            f"template {name!r}: templates directory {root} does not exist",
            template=name,
        )
    if not folder.is_dir():
        known = sorted(p.name for p in root.iterdir() if (p / SUBJECT_FILE).is_file())
        hint = f" (known: {', '.join(known)})" if known else ""
        raise TemplateNotFoundError(
            f"template {name!r}: no folder {folder}{hint}", template=name
        )
    for required in (SUBJECT_FILE, TEXT_FILE):
        if not (folder / required).is_file():
            raise TemplateNotFoundError(
                f"template {name!r}: missing {required} in {folder}",
                template=f"{name}/{required}",
            )
    environment = _environment(folder, root)
    html = (
        _compile(environment, name, HTML_FILE)
        if (folder / HTML_FILE).is_file()
        else None
    )
    return TemplateSet(
        name=name,
        subject=_compile(environment, name, SUBJECT_FILE),
        text=_compile(environment, name, TEXT_FILE),
        html=html,
    )


def _environment(folder: Path, root: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([folder, root]),
        # Escape only HTML; the text part and the subject must stay as written.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm", "xml"),
            default_for_string=False,
            default=False,
        ),
        # A missing variable is an error, never an empty string in a sent mail.
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # Drop the newline after a block tag, so {% if %} lines leave no blank line.
        trim_blocks=True,
        auto_reload=False,
    )


def _compile(
    environment: jinja2.Environment, name: str, filename: str
) -> jinja2.Template:
    try:
        return environment.get_template(filename)
    except jinja2.TemplateSyntaxError as exc:
        where = exc.filename or filename
        raise TemplateSyntaxError(
            f"template {name!r}: syntax error in {Path(where).name} line {exc.lineno}: "
            f"{exc.message}",
            template=f"{name}/{filename}",
            line=exc.lineno,
        ) from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateNotFoundError(
            f"template {name!r}: {filename} includes missing template {exc.name!r}",
            template=f"{name}/{filename}",
        ) from None


def _render(
    template: jinja2.Template, set_name: str, context: Mapping[str, Any]
) -> str:
    try:
        return template.render(context)
    except jinja2.UndefinedError as exc:
        filename = _short_name(template)
        text = str(exc.message or exc)
        match = _UNDEFINED_NAME.search(text) or _UNDEFINED_ATTRIBUTE.search(text)
        variable = match.group(1) if match else text
        raise UndefinedVariableError(
            f"template {set_name!r}: {filename} uses undefined variable {variable!r}",
            template=f"{set_name}/{filename}",
            variable=variable,
        ) from None
    except jinja2.TemplateNotFound as exc:
        filename = _short_name(template)
        raise TemplateNotFoundError(
            f"template {set_name!r}: {filename} includes missing template {exc.name!r}",
            template=f"{set_name}/{filename}",
        ) from None
    except jinja2.TemplateError as exc:
        filename = _short_name(template)
        raise TemplateError(
            f"template {set_name!r}: {filename}: {exc}",
            template=f"{set_name}/{filename}",
        ) from None


def _short_name(template: jinja2.Template) -> str:
    # Only on failure: a Path costs more than rendering a small template.
    return Path(template.filename or "?").name


def render(
    template_name: str,
    *,
    to: AddressInput,
    context: Mapping[str, Any] | None = None,
    cc: AddressInput | None = None,
    bcc: AddressInput | None = None,
    reply_to: AddressInput | None = None,
    sender: str | Address | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    templates_dir: Path | str | None = None,
    settings: MailerSettings | None = None,
) -> Message:
    """Render a template set into a validated Message.

    The subject is rendered as text and loses one trailing newline; the HTML
    body is autoescaped; the text body is not.

    Args:
        template_name: The set's folder name under the templates directory.
        to: The recipient(s).
        context: The variables the templates use.
        cc: Copy recipients.
        bcc: Blind copy recipients.
        reply_to: Reply-To address(es).
        sender: The From address; default ``MAILER_FROM``.
        headers: Extra headers.
        templates_dir: Where the sets are; default ``settings.templates_dir``.
        settings: Used for ``templates_dir`` when it is not given; default
            ``MailerSettings()``.

    Returns:
        The message.

    Raises:
        TemplateError: The set is missing, does not parse, or uses an undefined
            variable (the error names it).
        MessageError: The rendered values do not make a valid message (a
            subject with a newline, a bad address).
    """
    if templates_dir is None:
        templates_dir = (settings or MailerSettings()).templates_dir
    return render_set(
        load_template_set(template_name, templates_dir),
        to=to,
        context=context,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        sender=sender,
        headers=headers,
    )


def render_set(
    templates: TemplateSet,
    *,
    to: AddressInput,
    context: Mapping[str, Any] | None = None,
    cc: AddressInput | None = None,
    bcc: AddressInput | None = None,
    reply_to: AddressInput | None = None,
    sender: str | Address | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> Message:
    """Render an already loaded template set (a batch loads it once).

    Takes the same arguments as ``render`` after the set itself, and raises
    the same errors.
    """
    template_name = templates.name
    values = dict(context or {})
    subject = _render(templates.subject, template_name, values)
    text = _render(templates.text, template_name, values)
    html = _render(templates.html, template_name, values) if templates.html else None
    return message_from_rendered(
        subject,
        text,
        html,
        source=f"template {template_name!r}",
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        sender=sender,
        headers=headers,
    )


def message_from_rendered(
    subject: str,
    body: str,
    html: str | None,
    *,
    source: str,
    to: AddressInput,
    cc: AddressInput | None = None,
    bcc: AddressInput | None = None,
    reply_to: AddressInput | None = None,
    sender: str | Address | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> Message:
    """Build the Message from rendered parts; an error notes where they came from.

    One trailing newline of the subject is dropped: editors end files with
    one, and it is not part of the subject.
    """
    if subject.endswith("\n"):
        subject = subject[:-1].removesuffix("\r")
    try:
        return Message(
            to=to,
            subject=subject,
            body=body,
            html=html,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            sender=sender,
            headers=headers,
        )
    except MailerError as exc:
        exc.add_note(f"rendering {source}")
        raise
