"""Serve the JSON API under ``/api/v1/``: messages, their parts, events, previews.

======  ===================================  =====================================
method  path                                 answer
======  ===================================  =====================================
GET     /api/v1/messages?q=&offset=&limit=   a page of summaries, newest first
DELETE  /api/v1/messages                     delete every message
GET     /api/v1/messages/{id}                one message, parsed (id ``latest``)
PATCH   /api/v1/messages/{id}                ``{"read": b, "remote_images": b}``
DELETE  /api/v1/messages/{id}                delete it
GET     /api/v1/messages/{id}/raw            its bytes (``?download=1``: a file)
GET     /api/v1/messages/{id}/parts/{n}      one attachment or inline part
GET     /api/v1/events                       server-sent events of every change
GET     /api/v1/templates                    the template sets
GET     /api/v1/templates/{name}?sample=     one set rendered, or its error
======  ===================================  =====================================
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mailer.inbox.pages import content_disposition, part_response, readable
from mailer.inbox.parts import find_part
from mailer.inbox.previews import list_sets, render_preview
from mailer.inbox.store import MailStore
from mailer.inbox.summary import StoredMail
from mailer.inbox.views import message_detail
from mailer.inbox.web import state

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _summary(mail: StoredMail) -> dict[str, Any]:
    values = mail.to_json()
    values.pop("search_text", None)
    return values


def _integer(request: Request, name: str, default: int, high: int) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 <= value <= high else None


def _found(request: Request) -> tuple[MailStore, StoredMail] | JSONResponse:
    store = state(request).store
    if store is None:
        return _error(404, "this server has no inbox (previews only)")
    mail_id = request.path_params["id"]
    stored = store.latest() if mail_id == "latest" else store.get(mail_id)
    if stored is None:
        return _error(404, f"no message {mail_id!r}")
    return store, stored


async def list_messages(request: Request) -> Response:
    """Return a page of message summaries, newest first, and the totals."""
    store = state(request).store
    if store is None:
        return _error(404, "this server has no inbox (previews only)")
    offset = _integer(request, "offset", 0, 10**9)
    limit = _integer(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    if offset is None or limit is None:
        return _error(400, f"offset: 0 or more; limit: 0 to {MAX_LIMIT}")
    query = request.query_params.get("q", "")
    mails, total = store.search(query, offset=offset, limit=limit)
    return JSONResponse(
        {
            "total": total,
            "count": len(store),
            "unread": store.unread,
            "offset": offset,
            "limit": limit,
            "query": query,
            "messages": [_summary(m) for m in mails],
        }
    )


async def delete_messages(request: Request) -> Response:
    """Delete every message."""
    store = state(request).store
    if store is None:
        return _error(404, "this server has no inbox (previews only)")
    deleted = await store.clear()
    return JSONResponse({"deleted": deleted})


async def get_message(request: Request) -> Response:
    """Return one message: summary, headers, bodies, envelope, parts and checks."""
    found = _found(request)
    if isinstance(found, Response):
        return found
    store, stored = found
    mail = await store.sent_mail(stored.id)
    return JSONResponse(await asyncio.to_thread(message_detail, stored, mail))


async def patch_message(request: Request) -> Response:
    """Change a message's flags: ``read`` and ``remote_images``."""
    found = _found(request)
    if isinstance(found, Response):
        return found
    store, stored = found
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/json"
    ):
        return _error(415, "send a JSON object (Content-Type: application/json)")
    try:
        values = json.loads(await request.body())
    except ValueError:
        return _error(400, "the body is not JSON")
    flags: dict[str, bool] = {}
    if not isinstance(values, dict):
        return _error(400, "send a JSON object")
    for name, value in values.items():
        if name not in ("read", "remote_images") or not isinstance(value, bool):
            return _error(400, f"{name}: only read and remote_images, true or false")
        flags[name] = value
    updated = await store.update(stored.id, **flags)
    return JSONResponse(_summary(updated))


async def delete_message(request: Request) -> Response:
    """Delete one message."""
    found = _found(request)
    if isinstance(found, Response):
        return found
    store, stored = found
    await store.delete(stored.id)
    return JSONResponse({"deleted": 1})


async def raw_message(request: Request) -> Response:
    """Return a message's exact bytes (``?download=1`` saves it as ``ID.eml``)."""
    found = _found(request)
    if isinstance(found, Response):
        return found
    store, stored = found
    raw = await store.raw(stored.id)
    headers = {"Content-Security-Policy": "default-src 'none'; sandbox"}
    if request.query_params.get("download"):
        headers["Content-Disposition"] = content_disposition(f"{stored.id}.eml")
    # text/plain, not message/rfc822: a browser shows it instead of guessing.
    return Response(raw, media_type="text/plain; charset=utf-8", headers=headers)


async def message_part(request: Request) -> Response:
    """Return one attachment or inline part, as a download."""
    found = _found(request)
    if isinstance(found, Response):
        return found
    store, stored = found
    try:
        index = int(request.path_params["index"])
    except ValueError:
        return _error(404, "no such part")
    mail = await store.sent_mail(stored.id)
    part = readable(lambda: find_part(mail.message, index), None)
    if part is None:
        return _error(404, f"message {stored.id!r} has no part {index}")
    return part_response(part, download=True)


async def events(request: Request) -> Response:
    """Stream every change as server-sent events until the client leaves."""
    return StreamingResponse(
        state(request).events.stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )


async def list_templates(request: Request) -> Response:
    """Return the names of the template sets."""
    folder = state(request).templates_dir
    names = list_sets(folder) if folder is not None else []
    return JSONResponse({"templates": names})


async def get_preview(request: Request) -> Response:
    """Return one template set rendered with a sample, or the render error."""
    web = state(request)
    if web.templates_dir is None:
        return _error(404, "no templates directory")
    sample = _integer(request, "sample", 0, 10**6)
    try:
        preview = await asyncio.to_thread(
            render_preview,
            web.templates_dir,
            request.path_params["name"],
            sample=sample or 0,
            rows=web.rows,
        )
    except LookupError:
        return _error(404, f"no template set {request.path_params['name']!r}")
    return JSONResponse(preview.to_json())


ROUTES = [
    Route("/api/v1/messages", list_messages, methods=["GET"]),
    Route("/api/v1/messages", delete_messages, methods=["DELETE"]),
    Route("/api/v1/messages/{id:str}", get_message, methods=["GET"]),
    Route("/api/v1/messages/{id:str}", patch_message, methods=["PATCH"]),
    Route("/api/v1/messages/{id:str}", delete_message, methods=["DELETE"]),
    Route("/api/v1/messages/{id:str}/raw", raw_message, methods=["GET"]),
    Route("/api/v1/messages/{id:str}/parts/{index:str}", message_part, methods=["GET"]),
    Route("/api/v1/events", events, methods=["GET"]),
    Route("/api/v1/templates", list_templates, methods=["GET"]),
    Route("/api/v1/templates/{name:str}", get_preview, methods=["GET"]),
]
