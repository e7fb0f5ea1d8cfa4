"""Render templates given as strings, saying each time whether their source is trusted.

Template *sets* (``render()``) are files the developer wrote. Template strings
often are not: a shop owner's custom subject, a campaign body typed into a web
form. ``render_string`` has no default for ``trusted``, so every call site
states which case it is:

- ``trusted=False``: Jinja2's immutable sandbox plus size limits
  (:mod:`mailer.templates.sandbox`); breaking a rule raises ``UnsafeTemplateError``.
- ``trusted=True``: a normal Jinja2 environment, as for template sets.

Both escape HTML in the ``html`` part only, treat a missing variable as an
error, and check the rendered subject for CR/LF like any Message field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from mailer.content.addresses import Address
from mailer.content.message import AddressInput, Message
from mailer.exceptions import (
    TemplateError,
    TemplateSyntaxError,
    UndefinedVariableError,
    UnsafeTemplateError,
)
from mailer.templates.sandbox import DEFAULT_MAX_SIZE, BoundedSandbox, render_bounded
from mailer.templates.sets import message_from_rendered

# Longest untrusted template source, in characters (parsing is not free).
MAX_SOURCE_SIZE = 100_000
_LABEL = "<string>"


@lru_cache(maxsize=4)
def _environment(*, trusted: bool, html: bool) -> jinja2.Environment:
    if not trusted:
        return BoundedSandbox(autoescape=html)
    return jinja2.Environment(
        autoescape=html,  # noqa: S701 - on for the HTML part; text must stay as is
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )


@lru_cache(maxsize=256)
def _compile(source: str, *, part: str, trusted: bool) -> jinja2.Template:
    # Batches render the same strings for every row: compile each once.
    where = f"{_LABEL}/{part}"
    if not trusted and len(source) > MAX_SOURCE_SIZE:
        raise UnsafeTemplateError(
            f"template {where}: {len(source):,} characters, over the "
            f"{MAX_SOURCE_SIZE:,} allowed for an untrusted template",
            template=where,
        )
    try:
        return _environment(trusted=trusted, html=part == "html").from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntaxError(
            f"template {where}: syntax error on line {exc.lineno}: {exc.message}",
            template=where,
            line=exc.lineno,
        ) from None


def _render_part(
    source: str,
    part: str,
    context: dict[str, Any],
    *,
    trusted: bool,
    max_size: int,
) -> str:
    where = f"{_LABEL}/{part}"
    template = _compile(source, part=part, trusted=trusted)
    try:
        if trusted:
            return template.render(context)
        return render_bounded(template, context, max_size=max_size)
    except jinja2.UndefinedError as exc:
        variable = str(exc.message or exc)
        raise UndefinedVariableError(
            f"template {where}: undefined variable: {variable}",
            template=where,
            variable=variable.split("'")[1] if variable.count("'") >= 2 else variable,
        ) from None
    except (SecurityError, OverflowError, RecursionError) as exc:
        raise UnsafeTemplateError(
            f"template {where}: not allowed in an untrusted template: {exc}",
            template=where,
        ) from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {where}: {exc}", template=where) from None
    except Exception as exc:
        if trusted:
            raise
        # An untrusted author can raise anything ({{ 1/0 }}, {{ "a" - 1 }}):
        # report it as the template's fault, in one line.
        raise TemplateError(
            f"template {where}: {type(exc).__name__}: {exc}", template=where
        ) from None


def render_string(
    subject: str,
    body: str,
    html: str | None = None,
    *,
    trusted: bool,
    to: AddressInput,
    context: Mapping[str, Any] | None = None,
    cc: AddressInput | None = None,
    bcc: AddressInput | None = None,
    reply_to: AddressInput | None = None,
    sender: str | Address | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Message:
    """Render subject, text and HTML templates given as strings into a Message.

    Args:
        subject: The subject template; one trailing newline is dropped.
        body: The plain-text body template (not escaped).
        html: The HTML body template (autoescaped), if any.
        trusted: Whether you wrote these templates. ``False`` renders them in
            a sandbox with size limits; there is deliberately no default.
        to: The recipient(s).
        context: The variables the templates use.
        cc: Copy recipients.
        bcc: Blind copy recipients.
        reply_to: Reply-To address(es).
        sender: The From address; default ``MAILER_FROM``.
        headers: Extra headers.
        max_size: For untrusted templates, the most characters any value or
            rendered part may have.

    Returns:
        The message.

    Raises:
        UnsafeTemplateError: An untrusted template reached for something the
            sandbox forbids, or went over a size limit.
        TemplateError: A template does not parse, uses an undefined variable
            (``UndefinedVariableError``), or fails while rendering.
        MessageError: The rendered values do not make a valid message (a
            subject with a newline, a bad address).
    """
    values = dict(context or {})
    rendered = {
        part: _render_part(source, part, values, trusted=trusted, max_size=max_size)
        for part, source in (("subject", subject), ("body", body), ("html", html))
        if source is not None
    }
    return message_from_rendered(
        rendered["subject"],
        rendered["body"],
        rendered.get("html"),
        source="a template string",
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        sender=sender,
        headers=headers,
    )
