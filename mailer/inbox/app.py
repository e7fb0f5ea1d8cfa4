"""Assemble the web inbox: an ASGI application over a MailStore and the templates.

::

    app = create_app(store, templates_dir=Path("templates"))

serves the inbox pages (``/``), the template previews (``/templates``) and the
JSON API (``/api/v1/``); ``create_app(None, templates_dir=...)`` serves the
previews alone (``mailer preview --serve``). Needs the ``web`` extra
(Starlette); ``mailer.inbox.webserver`` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from mailer.inbox import api, pages
from mailer.inbox.guard import Guard
from mailer.inbox.previews import Sample, watch
from mailer.inbox.store import MailStore
from mailer.inbox.web import HERE, InboxWeb


def create_app(
    store: MailStore | None,
    *,
    templates_dir: Path | None = None,
    rows: Sequence[Sample] = (),
    watch_templates: bool = True,
) -> Guard:
    """Return the web inbox application.

    Args:
        store: The messages to show; ``None`` serves the previews alone.
        templates_dir: The template sets to preview, if any.
        rows: Sample data for sets without a ``preview.json``.
        watch_templates: Reload open preview pages when a template changes.
    """
    web = InboxWeb(store, templates_dir, rows)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        unsubscribe = store.subscribe(web.announce) if store is not None else None
        watcher = None
        if templates_dir is not None and watch_templates:
            watcher = asyncio.create_task(
                watch(templates_dir, lambda: web.events.publish("templates", {}))
            )
        try:
            yield
        finally:
            web.events.close()
            if unsubscribe is not None:
                unsubscribe()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    routes = [
        *pages.ROUTES,
        *api.ROUTES,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _not_allowed},
    )
    app.state.inbox = web
    return Guard(app)


async def _not_found(request: Request, exc: Exception) -> PlainTextResponse:
    return PlainTextResponse("not found\n", status_code=404)


async def _not_allowed(request: Request, exc: Exception) -> PlainTextResponse:
    return PlainTextResponse("method not allowed\n", status_code=405)
