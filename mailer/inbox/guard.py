"""Guard the web inbox: loopback Host names only, no cross-site changes, safe headers.

The inbox shows hostile content and listens on a well-known port, so:

- A request whose ``Host`` is not a loopback name is refused. A page on
  ``evil.example`` whose name is re-pointed at 127.0.0.1 (DNS rebinding) would
  otherwise read the inbox as "same origin".
- A request that changes anything (DELETE, PATCH, POST) is refused when the
  browser says it comes from another site (``Origin``, ``Sec-Fetch-Site``).
  Such requests also need a method or content type that a cross-site page can
  only send after a CORS preflight, and the inbox answers no preflight: there
  is no CORS at all.
- Every response carries ``nosniff``, ``no-referrer`` and, unless a route set
  its own, a Content-Security-Policy that allows only the inbox's own scripts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from mailer.config.settings import is_loopback

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD"})
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_COMMON_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_FRAMING_HEADERS = (b"content-security-policy", b"x-frame-options")


def host_name(host_header: str) -> str:
    """Return the name part of a ``Host`` header (``[::1]:8025`` -> ``::1``)."""
    host = host_header.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_host(host_header: str) -> bool:
    """Return whether a ``Host`` header names this machine."""
    name = host_name(host_header)
    return bool(name) and is_loopback(name)


class Guard:
    """ASGI middleware applying the rules in this module's docstring.

    Args:
        app: The application to protect.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse or pass on one request, adding the safety headers."""
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            # No websockets here; anything else is closed at once.
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = _headers(scope)
        host = headers.get("host", "")
        if not is_loopback_host(host):
            await _refuse(
                send,
                421,
                "refused: this inbox answers only to a loopback Host "
                "(127.0.0.1, localhost or [::1])",
            )
            return
        if scope["method"] not in SAFE_METHODS:
            problem = _cross_site(headers, host)
            if problem:
                await _refuse(send, 403, f"refused: {problem}")
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [h for h in _COMMON_HEADERS if h[0] not in present]
                if not present.intersection(_FRAMING_HEADERS):
                    extra.append((b"content-security-policy", PAGE_POLICY.encode()))
                    extra.append((b"x-frame-options", b"DENY"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


def _cross_site(headers: dict[str, str], host: str) -> str | None:
    """Say why a state-changing request looks cross-site, or None."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"a {fetch_site} request may not change the inbox"
    origin = headers.get("origin")
    if origin is not None:
        if origin == "null":
            return "a request from an opaque origin may not change the inbox"
        if urlsplit(origin).netloc.lower() != host.lower():
            return "a request from another origin may not change the inbox"
    return None


async def _refuse(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *_COMMON_HEADERS,
                (b"content-security-policy", b"default-src 'none'"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
