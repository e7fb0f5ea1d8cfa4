"""Hold what every route of the web inbox needs: the store, events, page templates."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from mailer.inbox.events import Broadcaster
from mailer.inbox.previews import Sample
from mailer.inbox.store import Change, MailStore

HERE = Path(__file__).resolve().parent


@dataclass
class InboxWeb:
    """What every route needs: the store, the event stream and the templates.

    Attributes:
        store: The messages (``None`` when serving previews only).
        templates_dir: The template sets to preview (``None``: no previews).
        rows: Sample data from a recipients file, for sets without preview.json.
        events: Where changes are announced to open pages.
    """

    store: MailStore | None
    templates_dir: Path | None = None
    rows: Sequence[Sample] = ()
    events: Broadcaster = field(default_factory=Broadcaster)
    pages: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.pages = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "pages"),
            autoescape=True,  # every subject, address and header is escaped
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.pages.filters["when"] = _when
        self.pages.filters["size"] = _size

    def render(
        self, request: Request, name: str, *, status: int = 200, **values: Any
    ) -> HTMLResponse:
        """Render one of the inbox's own page templates."""
        html = self.pages.get_template(name).render(
            request=request,
            has_inbox=self.store is not None,
            has_templates=self.templates_dir is not None,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def announce(self, change: Change) -> None:
        """Pass a store change on to the open pages."""
        data: dict[str, Any] = {}
        if self.store is not None:
            data["total"] = len(self.store)
            data["unread"] = self.store.unread
        if change.mail is not None:
            data["id"] = change.mail.id
        self.events.publish(change.kind, data)


def state(request: Request) -> InboxWeb:
    """Return the InboxWeb of the application serving ``request``."""
    web: InboxWeb = request.app.state.inbox
    return web


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KB"
    return f"{count / 1024 / 1024:.1f} MB"
