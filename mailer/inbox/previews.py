"""Render template sets for the preview pages, with sample data and exact errors.

Samples come from ``NAME/preview.json`` (an object, or a list of objects, each
one recipient's variables, with ``email`` and ``name`` for the To address) or
from the rows of a recipients file. A render error names the file and line it
happened at, and the variable, so the page can always say what went wrong.
Files are read anew on every render: the page shows what is on disk now.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from mailer.content.message import Message
from mailer.exceptions import MailerError, TemplateSyntaxError
from mailer.templates.htmlfirst import html_to_text
from mailer.templates.inline import InlineImages
from mailer.templates.sets import (
    SUBJECT_FILE,
    TemplateSet,
    compile_template_set,
    message_from_rendered,
)

SAMPLE_FILE = "preview.json"
DEFAULT_RECIPIENT = "preview@example.test"
WATCH_INTERVAL = 0.5
_UNDEFINED = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


@dataclass(frozen=True, slots=True)
class Sample:
    """One set of variables to render a template with, and where it came from."""

    label: str
    context: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a preview could not be rendered, and where.

    Attributes:
        message: What went wrong, in one line.
        file: The file at fault, relative to the templates directory.
        line: The line in that file, when known.
        variable: The undefined variable, for that kind of error.
    """

    message: str
    file: str | None = None
    line: int | None = None
    variable: str | None = None


@dataclass
class Preview:
    """A rendered template set (or the problem that stopped it)."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    sample: int = 0
    to: str = DEFAULT_RECIPIENT
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    problem: Problem | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the preview as JSON-ready values."""
        problem = self.problem
        return {
            "name": self.name,
            "samples": [s.label for s in self.samples],
            "sample": self.sample,
            "to": self.to,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "problem": None if problem is None else problem.__dict__.copy(),
        }


def list_sets(templates_dir: Path) -> list[str]:
    """Return the names of the template sets under ``templates_dir``."""
    if not templates_dir.is_dir():
        return []
    return sorted(
        entry.name
        for entry in templates_dir.iterdir()
        if entry.is_dir()
        and not entry.name.startswith(("_", "."))
        and (entry / SUBJECT_FILE).is_file()
    )


def load_samples(
    templates_dir: Path, name: str, rows: Sequence[Sample] = ()
) -> tuple[list[Sample], Problem | None]:
    """Return the samples for a set: its ``preview.json``, else ``rows``.

    A set without either gets one empty sample, so that its undefined
    variables are named on the page.
    """
    path = templates_dir / name / SAMPLE_FILE
    if not path.is_file():
        return (list(rows) or [Sample("no sample data", {})]), None
    where = f"{name}/{SAMPLE_FILE}"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return [], Problem(f"{where}: {exc.msg}", file=where, line=exc.lineno)
    except (OSError, UnicodeDecodeError) as exc:
        return [], Problem(f"{where}: cannot read it ({exc})", file=where)
    except RecursionError:
        # json.loads recurses once per nesting level: shown, never a 500.
        return [], Problem(f"{where}: nested too deeply to read", file=where)
    items = values if isinstance(values, list) else [values]
    samples = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            return [], Problem(
                f"{where}: sample {number} must be an object of variables", file=where
            )
        label = str(item.get("email") or f"sample {number}")
        samples.append(Sample(f"{SAMPLE_FILE} #{number}: {label}", item))
    if not samples:
        return [], Problem(f"{where}: holds no sample", file=where)
    return samples, None


def render_preview(
    templates_dir: Path, name: str, *, sample: int = 0, rows: Sequence[Sample] = ()
) -> Preview:
    """Render set ``name`` with sample number ``sample``; never raises for the set.

    Raises:
        LookupError: There is no set of that name.
    """
    if name not in list_sets(templates_dir):
        raise LookupError(name)
    samples, problem = load_samples(templates_dir, name, rows)
    preview = Preview(name=name, samples=samples)
    if problem is not None:
        preview.problem = problem
        return preview
    preview.sample = min(max(sample, 0), len(samples) - 1)
    context = dict(samples[preview.sample].context)
    preview.to = _recipient(context)
    try:
        templates = compile_template_set(name, templates_dir)
    except TemplateSyntaxError as exc:
        preview.problem = Problem(str(exc), file=exc.template, line=exc.line)
        return preview
    except MailerError as exc:
        preview.problem = Problem(str(exc))
        return preview
    root = templates_dir.resolve()
    try:
        subject = _render(templates.subject, context, root)
        if templates.text is not None:
            preview.text = _render(templates.text, context, root)
        # inline("logo.png") in body.html gives a cid: URL, as when sending.
        images = InlineImages(name, templates.folders, templates.root)
        preview.html = (
            _render(templates.html, {**context, "inline": images}, root)
            if templates.html
            else None
        )
        if templates.text is None:
            # An HTML-first set: the text part is derived as when sending.
            preview.text = html_to_text(preview.html or "", template=name)
        preview.subject = _check(templates, subject, preview)
    except _RenderError as exc:
        preview.problem = exc.problem
    except MailerError as exc:
        preview.problem = Problem(str(exc))
    return preview


class _RenderError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _recipient(context: Mapping[str, Any]) -> str:
    email = context.get("email")
    if isinstance(email, str) and email.strip():
        return email.strip()
    return DEFAULT_RECIPIENT


def _render(template: jinja2.Template, context: Mapping[str, Any], root: Path) -> str:
    try:
        return template.render(context)
    except jinja2.TemplateError as exc:
        file, line = _where(exc, root, template)
        text = str(getattr(exc, "message", None) or exc)
        found = _UNDEFINED.search(text)
        variable = (found.group(1) or found.group(2)) if found else None
        what = f"undefined variable {variable!r}" if variable else text
        raise _RenderError(
            Problem(what, file=file, line=line, variable=variable)
        ) from None


def _where(
    exc: BaseException, root: Path, template: jinja2.Template
) -> tuple[str | None, int | None]:
    """Find the innermost template frame of a render error.

    Jinja2 rewrites tracebacks so that template lines appear as frames of
    their files: the last such frame is where the error happened.
    """
    file, line = None, None
    traceback = exc.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        path = Path(filename)
        if path.is_absolute() and path.is_relative_to(root):
            file, line = path.relative_to(root).as_posix(), traceback.tb_lineno
        traceback = traceback.tb_next
    if file is None and template.filename:
        path = Path(template.filename)
        file = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
    return file, line


def _check(templates: TemplateSet, subject: str, preview: Preview) -> str:
    """Build the real Message, so the preview fails where sending would."""
    try:
        message: Message = message_from_rendered(
            subject,
            preview.text or "",
            preview.html,
            source=f"template {templates.name!r}",
            to=preview.to,
            sender="preview@example.test",
        )
    except MailerError as exc:
        raise _RenderError(Problem(str(exc))) from None
    return message.subject


def fingerprint(templates_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Return what changes when any file under ``templates_dir`` changes."""
    if not templates_dir.is_dir():
        return ()
    found = []
    for path in templates_dir.rglob("*"):
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(found))


async def watch(
    templates_dir: Path,
    on_change: Callable[[], None],
    *,
    interval: float = WATCH_INTERVAL,
) -> None:
    """Call ``on_change`` whenever a file under ``templates_dir`` changes.

    Polls modification times and sizes: a templates folder holds a few dozen
    small files, and polling works the same on every file system (network
    mounts and containers' bind mounts included). Runs until cancelled.
    """
    last = await asyncio.to_thread(fingerprint, templates_dir)
    while True:
        await asyncio.sleep(interval)
        current = await asyncio.to_thread(fingerprint, templates_dir)
        if current != last:
            last = current
            on_change()
