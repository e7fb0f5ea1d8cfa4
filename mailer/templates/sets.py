"""Render template sets (subject, text and HTML) with Jinja2 into Messages.

A template set is a folder ``TEMPLATES_DIR/NAME/`` holding ``subject.txt`` and
``body.txt``, ``body.html`` or both; without ``body.txt`` the text part is
derived from the rendered HTML. Includes and layouts are looked up in the set's
own folder first, then in the templates directory. Each set gets one Jinja2
environment per process, so its templates are compiled once.

A set may hold a ``template.toml`` with ``inline_css = true`` (move ``<style>``
rules into ``style=`` attributes), and localised copies in ``NAME/<locale>/``
(``NAME/de/``, ``NAME/pt-BR/``), chosen by ``locale=`` with a fall back to the
language (``de-AT`` -> ``de``) and then to ``NAME/`` itself.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from mailer.config.settings import MailerSettings
from mailer.content.addresses import Address
from mailer.content.attachments import Attachment
from mailer.content.message import AddressInput, Message
from mailer.content.unsubscribe import Unsubscribe
from mailer.exceptions import (
    MailerError,
    TemplateError,
    TemplateNotFoundError,
    TemplateSyntaxError,
    UndefinedVariableError,
)
from mailer.templates.htmlfirst import html_to_text, inline_css
from mailer.templates.inline import InlineImages

SUBJECT_FILE = "subject.txt"
TEXT_FILE = "body.txt"
HTML_FILE = "body.html"
CONFIG_FILE = "template.toml"
CONFIG_KEYS = frozenset({"inline_css"})
# BCP 47-ish: a language, then optional subtags (de, de-AT, pt_BR, zh-Hant).
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")

# A set name is one folder name: no separators, no "..", nothing hidden.
_SET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")
_UNDEFINED_ATTRIBUTE = re.compile(r"has no attribute '([^']+)'")


@dataclass(frozen=True, slots=True)
class TemplateSet:
    """The compiled templates of one set (in one locale).

    Attributes:
        name: The set's name.
        subject: The subject template.
        text: The text template; None when the text is derived from the HTML.
        html: The HTML template, if the set has one.
        folders: Where includes and inline images are looked up, in order.
        root: The templates directory (nothing outside it is read).
        inline_css: Whether ``<style>`` rules are moved into ``style=``.
        locale: The locale folder used, if any.
    """

    name: str
    subject: jinja2.Template
    text: jinja2.Template | None
    html: jinja2.Template | None
    folders: tuple[Path, ...] = ()
    root: Path = Path()
    inline_css: bool = False
    locale: str | None = None


def load_template_set(
    name: str, templates_dir: Path | str, *, locale: str | None = None
) -> TemplateSet:
    """Return the compiled template set ``name`` (cached for the process).

    Args:
        name: The set's folder name.
        templates_dir: The folder holding the sets.
        locale: Use ``NAME/<locale>/`` when it exists (then the language
            alone, ``de`` for ``de-AT``), else ``NAME/``.

    Raises:
        TemplateNotFoundError: The set or one of its required files is missing.
        TemplateSyntaxError: A template does not parse (the error has the line).
        TemplateError: The locale is malformed or ``template.toml`` is invalid.
    """
    if not _SET_NAME.fullmatch(name):
        raise TemplateNotFoundError(
            f"template {name!r}: not a template set name", template=name
        )
    root = Path(templates_dir).resolve()
    if locale:
        if not _LOCALE.fullmatch(str(locale)):
            raise TemplateError(
                f"template {name!r}: locale {locale!r} is not a locale like "
                "'de' or 'pt-BR'",
                template=name,
            )
        for candidate in (locale, re.split(r"[-_]", locale)[0]):
            if (root / name / candidate / SUBJECT_FILE).is_file():
                return _load_cached(name, root, candidate)
    return _load_cached(name, root, None)


@lru_cache(maxsize=256)
def _load_cached(name: str, root: Path, locale: str | None) -> TemplateSet:
    return compile_template_set(name, root, locale=locale)


def compile_template_set(
    name: str, templates_dir: Path | str, *, locale: str | None = None
) -> TemplateSet:
    """Compile template set ``name`` from its files now, bypassing the cache.

    For tools that show templates while they are edited (the inbox's
    previews); ``load_template_set`` compiles each set once per process.

    Args:
        name: The set's folder name.
        templates_dir: The folder holding the sets.
        locale: Compile ``NAME/<locale>/`` (which must exist) instead of ``NAME/``.

    Raises:
        TemplateNotFoundError: The set or one of its required files is missing.
        TemplateSyntaxError: A template does not parse (the error has the line).
    """
    if not _SET_NAME.fullmatch(name):
        raise TemplateNotFoundError(
            f"template {name!r}: not a template set name", template=name
        )
    root = Path(templates_dir).resolve()
    base = root / name
    folder = base if locale is None else base / locale
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
    if not (folder / SUBJECT_FILE).is_file():
        raise TemplateNotFoundError(
            f"template {name!r}: missing {SUBJECT_FILE} in {folder}",
            template=f"{name}/{SUBJECT_FILE}",
        )
    has_text = (folder / TEXT_FILE).is_file()
    has_html = (folder / HTML_FILE).is_file()
    if not has_text and not has_html:
        raise TemplateNotFoundError(
            f"template {name!r}: missing {TEXT_FILE} (or {HTML_FILE}, from which "
            f"the text is derived) in {folder}",
            template=f"{name}/{TEXT_FILE}",
        )
    folders = (folder, base, root) if locale is not None else (folder, root)
    environment = _environment(folders)
    config = _read_config(name, base)
    return TemplateSet(
        name=name,
        subject=_compile(environment, name, SUBJECT_FILE),
        text=_compile(environment, name, TEXT_FILE) if has_text else None,
        html=_compile(environment, name, HTML_FILE) if has_html else None,
        folders=folders,
        root=root,
        inline_css=config.get("inline_css", False),
        locale=locale,
    )


def _read_config(name: str, folder: Path) -> dict[str, bool]:
    """Read the set's ``template.toml`` (an opt-in per set); {} when absent."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        return {}
    where = f"{name}/{CONFIG_FILE}"
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(
            f"template {name!r}: {CONFIG_FILE} is not valid TOML: {exc}",
            template=where,
        ) from None
    for key, value in values.items():
        if key not in CONFIG_KEYS:
            raise TemplateError(
                f"template {name!r}: {CONFIG_FILE}: unknown key {key!r} "
                f"(known: {', '.join(sorted(CONFIG_KEYS))})",
                template=where,
            )
        if not isinstance(value, bool):
            raise TemplateError(
                f"template {name!r}: {CONFIG_FILE}: {key} must be true or false",
                template=where,
            )
    return values


class _SetEnvironment(jinja2.Environment):
    """A Jinja2 environment whose templates keep their globals in a plain dict."""

    def make_globals(
        self, d: MutableMapping[str, Any] | None
    ) -> MutableMapping[str, Any]:
        """Return the template's globals over the environment's, merged once.

        Jinja2 returns a ChainMap, so that later changes to the environment's
        globals reach templates already loaded. Ours never change once made,
        and every render copies the globals of each template it runs (its
        layout and includes too): iterating a ChainMap cost ~20% of rendering
        a message.
        """
        return {**self.globals, **(d or {})}


def _environment(folders: Sequence[Path]) -> jinja2.Environment:
    return _SetEnvironment(
        loader=jinja2.FileSystemLoader(list(folders)),
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
    attachments: Iterable[Attachment] | None = None,
    unsubscribe: str | Iterable[str] | Unsubscribe | None = None,
    locale: str | None = None,
) -> Message:
    """Render a template set into a validated Message.

    The subject is rendered as text and loses one trailing newline; the HTML
    body is autoescaped; the text body is not. In body.html,
    ``{{ inline("logo.png") }}`` gives a ``cid:`` URL and adds the image as
    an inline part.

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
        attachments: Files to attach (after any inline images).
        unsubscribe: One-click unsubscribe URL(s), see ``Message``.
        locale: Render ``NAME/<locale>/`` when the set has it.

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
        load_template_set(template_name, templates_dir, locale=locale),
        to=to,
        context=context,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        sender=sender,
        headers=headers,
        attachments=attachments,
        unsubscribe=unsubscribe,
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
    attachments: Iterable[Attachment] | None = None,
    unsubscribe: str | Iterable[str] | Unsubscribe | None = None,
) -> Message:
    """Render an already loaded template set (a batch loads it once).

    Takes the same arguments as ``render`` after the set itself, and raises
    the same errors.
    """
    template_name = templates.name
    values = dict(context or {})
    subject = _render(templates.subject, template_name, values)
    html = None
    files: list[Attachment] = []
    if templates.html is not None:
        images = InlineImages(template_name, templates.folders, templates.root)
        html = _render(templates.html, template_name, {**values, "inline": images})
        files.extend(images.attachments)
    if templates.text is not None:
        text = _render(templates.text, template_name, values)
    else:
        assert html is not None  # noqa: S101 - a set has body.txt or body.html
        text = html_to_text(html, template=template_name)
    if html is not None and templates.inline_css:
        html = inline_css(html, template=template_name)
    files.extend(attachments or ())
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
        attachments=files,
        unsubscribe=unsubscribe,
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
    attachments: Iterable[Attachment] | None = None,
    unsubscribe: str | Iterable[str] | Unsubscribe | None = None,
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
            attachments=attachments,
            unsubscribe=unsubscribe,
        )
    except MailerError as exc:
        exc.add_note(f"rendering {source}")
        raise
