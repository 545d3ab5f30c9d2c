"""Who may talk to the server, and how much they may send (ASGI middleware).

`TokenGuard` checks the access token on every HTTP request and websocket, and
refuses requests that a web page on another site makes through the user's
browser (a page may POST to 127.0.0.1; its Origin then differs from the Host).
`BodyLimit` refuses request bodies past the configured sizes with 413.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nodeflow.server.safety import Limits

Scope = dict[str, Any]
ASGIApp = Any

COOKIE = "nodeflow_token"
UPLOAD_PATHS = ("/api/uploads", "/upload/image", "/api/upload/image")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _refuse(scope: Scope, send: Any, status: int, type_: str, message: str,
                  receive: Any = None) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting answers the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps({"error": {"type": type_, "message": message, "problems": []}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    """Every request and websocket must carry the token (when the server has one): as
    ``Authorization: Bearer T``, ``X-Nodeflow-Token: T``, ``?token=T``, or the cookie set when
    a browser first opened a page with ``?token=T``."""

    def __init__(self, app: ASGIApp, token: str | None, cors: list[str]) -> None:
        self.app = app
        self.token = token
        self.cors = set(cors)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        origin = headers.get("origin")
        if origin and origin not in self.cors and not _same_origin(origin, headers.get("host", "")):
            await _refuse(scope, send, 403, "forbidden", f"requests from {origin} are not allowed; "
                          "start the server with --cors ORIGIN to allow a web page there")
            return
        if self.token is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope.get("method") == "OPTIONS" and self.cors:
            await self.app(scope, receive, send)  # CORS pre-flight: browsers send no credentials
            return
        given, from_query = _given_token(scope, headers)
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            await _refuse(scope, send, 401, "unauthorized",
                          "this server needs its access token: send 'Authorization: Bearer TOKEN' "
                          "(or ?token=TOKEN); `nodeflow serve` printed it when it started")
            return
        if not from_query or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    return bool(host) and parts.netloc.lower() == host.lower()


def _given_token(scope: Scope, headers: dict[str, str]) -> tuple[str | None, bool]:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    if "x-nodeflow-token" in headers:
        return headers["x-nodeflow-token"], False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "token" in query:
        return query["token"][0], True
    if "cookie" in headers:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers["cookie"])
        except Exception:  # noqa: BLE001 - a malformed cookie header is no token
            return None, False
        if COOKIE in jar:
            return jar[COOKIE].value, False
    return None, False


class BodyLimit:
    """Refuses request bodies larger than the limits with 413 (checked on the declared length
    and again on the bytes actually received)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        upload = path in UPLOAD_PATHS
        # Multipart framing adds a little to the picture itself.
        limit = self.limits.max_upload_bytes + 64 * 1024 if upload else self.limits.max_request_bytes
        what = "upload" if upload else "request body"
        length = _headers(scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(scope, send, 413, "too_large", f"the {what} is {int(length):,} bytes; this "
                          f"server accepts at most {limit:,}")
            return
        received = 0
        exceeded = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The app sees the body end here; its answer is replaced by the 413 below.
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replacing_send(message: dict[str, Any]) -> None:
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await _refuse(scope, send, 413, "too_large",
                              f"the {what} is larger than {limit:,} bytes, the most this server accepts")

        await self.app(scope, counting_receive, replacing_send)
