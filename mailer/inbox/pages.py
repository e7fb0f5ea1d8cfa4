"""Serve the inbox's HTML pages: the list, one message, its frame, the previews.

Pages are rendered on the server (every value escaped by Jinja2's autoescape);
``static/inbox.js`` adds live updates, tabs and the buttons. A message's HTML
and a preview's HTML are separate documents, shown in sandboxed frames under a
policy of their own (``views.body_policy``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.inbox.parts import find_by_content_id, part_content
from mailer.inbox.previews import list_sets, render_preview
from mailer.inbox.store import MailStore
from mailer.inbox.views import body_policy, message_detail, prepare_html
from mailer.inbox.web import state
from mailer.records import part_filename

T = TypeVar("T")

PAGE_SIZE = 50
# Bytes of a message's source shown on its page (the .eml download has all).
SOURCE_SHOWN = 256 * 1024
# Inline parts and attachments are never run as documents of this origin.
PART_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


def _store(request: Request) -> MailStore | None:
    return state(request).store


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def _listing(request: Request) -> dict[str, Any]:
    store = _store(request)
    assert store is not None  # noqa: S101 - routes below check it first
    query = request.query_params.get("q", "")
    page = _page_number(request)
    mails, total = store.search(query, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    return {
        "mails": mails,
        "query": query,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "total": total,
        "count": len(store),
        "unread": store.unread,
    }


async def inbox_page(request: Request) -> Response:
    """Show the list of messages, newest first (``?q=`` searches)."""
    if _store(request) is None:
        return RedirectResponse("/templates", status_code=303)
    return state(request).render(request, "list.html", **_listing(request))


async def rows_fragment(request: Request) -> Response:
    """Return the list's rows alone, for the page to swap in on a change."""
    if _store(request) is None:
        return Response(status_code=404)
    return state(request).render(request, "rows.html", **_listing(request))


async def message_page(request: Request) -> Response:
    """Show one message: its HTML, text, headers, source, envelope, parts, checks."""
    store = _store(request)
    mail_id = request.path_params["id"]
    stored = store.get(mail_id) if store is not None else None
    if store is None or stored is None:
        return state(request).render(
            request, "missing.html", status=404, what="message"
        )
    mail = await store.sent_mail(mail_id)
    detail = await asyncio.to_thread(message_detail, stored, mail)
    # The Source tab shows the start: a 20 MB attachment made a 27 MB page
    # (base64 in a <pre>); the download link gives the whole message.
    raw = mail.raw[:SOURCE_SHOWN].decode("utf-8", "replace")
    return state(request).render(
        request,
        "message.html",
        mail=stored,
        detail=detail,
        raw=raw,
        source_cut=len(mail.raw) > SOURCE_SHOWN,
        source_shown=SOURCE_SHOWN,
    )


async def message_body(request: Request) -> Response:
    """Serve a message's HTML as its own document, for the sandboxed frame."""
    store = _store(request)
    mail_id = request.path_params["id"]
    stored = store.get(mail_id) if store is not None else None
    if store is None or stored is None:
        return Response("not found\n", status_code=404, media_type="text/plain")
    mail = await store.sent_mail(mail_id)
    html = readable(lambda: mail.html, None)
    if html is None:
        html = "<p style='font-family:sans-serif;color:#666'>(no HTML part)</p>"
    document = prepare_html(html, cid_url=f"/messages/{mail_id}/cid/")
    return _document(request, document, remote=stored.remote_images)


async def inline_part(request: Request) -> Response:
    """Serve an inline part by Content-ID (an image the HTML shows)."""
    store = _store(request)
    mail_id = request.path_params["id"]
    if store is None or store.get(mail_id) is None:
        return Response(status_code=404)
    mail = await store.sent_mail(mail_id)
    wanted = request.path_params["cid"]
    part = readable(lambda: find_by_content_id(mail.message, wanted), None)
    if part is None:
        return Response(status_code=404)
    return part_response(part, download=False)


def part_response(part: EmailMessage, *, download: bool) -> Response:
    """Return a part's bytes, never runnable as a page of this origin."""
    content_type = part.get_content_type()
    if not download and not content_type.startswith("image/"):
        content_type = "application/octet-stream"
    headers = {"Content-Security-Policy": PART_POLICY, "X-Frame-Options": "DENY"}
    if download:
        filename = part_filename(part) or "attachment"
        headers["Content-Disposition"] = content_disposition(filename)
    return Response(part_content(part), media_type=content_type, headers=headers)


def readable(read: Callable[[], T], default: T) -> T:
    """Return ``read()``, or ``default`` when the message cannot be parsed.

    The standard library fails on some hostile messages (RecursionError on
    MIME nested ~1,000 deep); the page then shows what it can, never a 500.
    """
    try:
        return read()
    except Exception:  # noqa: BLE001 - see message_detail's "problem"
        return default


def content_disposition(filename: str) -> str:
    """Return an ``attachment`` Content-Disposition naming ``filename`` safely."""
    from urllib.parse import quote

    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
        for c in filename
    )
    return (
        f'attachment; filename="{ascii_name}"; '
        f"filename*=UTF-8''{quote(filename, safe='')}"
    )


def _document(request: Request, html: str, *, remote: bool) -> Response:
    origin = f"{request.url.scheme}://{request.headers.get('host', '127.0.0.1')}"
    return Response(
        html,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": body_policy(origin, remote=remote),
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "no-store",
        },
    )


async def templates_page(request: Request) -> Response:
    """List the template sets that can be previewed."""
    web = state(request)
    names = list_sets(web.templates_dir) if web.templates_dir is not None else []
    return web.render(request, "templates.html", names=names, folder=web.templates_dir)


def _sample(request: Request) -> int:
    try:
        return int(request.query_params.get("sample", "0"))
    except ValueError:
        return 0


async def preview_page(request: Request) -> Response:
    """Show one set rendered: subject, text and HTML side by side, or the error."""
    web = state(request)
    name = request.path_params["name"]
    if web.templates_dir is None:
        return web.render(request, "missing.html", status=404, what="template set")
    try:
        preview = await asyncio.to_thread(
            render_preview,
            web.templates_dir,
            name,
            sample=_sample(request),
            rows=web.rows,
        )
    except LookupError:
        return web.render(request, "missing.html", status=404, what="template set")
    return web.render(request, "preview.html", preview=preview)


async def preview_body(request: Request) -> Response:
    """Serve a preview's HTML as its own document, for the sandboxed frame."""
    web = state(request)
    if web.templates_dir is None:
        return Response(status_code=404)
    try:
        preview = await asyncio.to_thread(
            render_preview,
            web.templates_dir,
            request.path_params["name"],
            sample=_sample(request),
            rows=web.rows,
        )
    except LookupError:
        return Response(status_code=404)
    html = preview.html
    if html is None:
        note = "(no body.html in this set)" if preview.problem is None else "(error)"
        html = f"<p style='font-family:sans-serif;color:#666'>{note}</p>"
    # Previews are your own templates: remote images load.
    return _document(request, _BASE_TARGET + html, remote=True)


_BASE_TARGET = '<base target="_blank">'

ROUTES = [
    Route("/", inbox_page),
    Route("/fragments/rows", rows_fragment),
    Route("/messages/{id:str}", message_page),
    Route("/messages/{id:str}/body", message_body),
    Route("/messages/{id:str}/cid/{cid:path}", inline_part),
    Route("/templates", templates_page),
    Route("/templates/{name:str}", preview_page),
    Route("/templates/{name:str}/body", preview_body),
]
