"""The outermost request guard (pure ASGI): request id, body-size limit and the last-resort 500.

Why pure ASGI: Starlette's ``@app.middleware("http")`` runs the route in a separate task and
its ``ServerErrorMiddleware`` answers an unhandled exception *and re-raises it*, so uvicorn
logged "Exception in ASGI application" and dropped the keep-alive connection after every 500.
:class:`RequestGuard` catches the exception itself, answers once, logs once and returns
normally, so the connection stays usable.

- **Request id:** ``X-Request-ID`` from the request (≤ 64 printable characters) or a new
  UUID4 hex, echoed in every answer and in the log line of an internal error.
- **Body limit** (``VISIVO_MAX_REQUEST_MB``): a ``Content-Length`` over the limit is refused
  with HTTP 413 before the application reads anything; a body streamed without (or with a
  false) length is counted as it arrives and refused the same way once it passes the limit,
  so nothing past the limit is ever buffered or parsed. Routes that stream uploads to disk
  under their own cap (:data:`OWN_LIMIT_PATHS`) are exempt.
- **Internal errors:** HTTP 500 ``{"valid": false, "error": "Internal error: <type> (request <id>)"}``
  (the JS9 routes: ``{"detail": ...}``, that API's convention).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("visivo")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes that stream their body to disk under their own size cap (SAMP uploads).
OWN_LIMIT_PATHS = ("/v1/samp/upload-file",)
#: Routes whose error body is the JS9 analysis API's ``{"detail": ...}``.
JS9_PREFIX = "/api/visualization/js9"
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,64}$")


class BodyTooLarge(Exception):
    """The request body passed the limit while it was being received."""


def _body(path: str, message: str) -> bytes:
    payload = {"detail": message} if path.startswith(JS9_PREFIX) else {"valid": False, "error": message}
    return json.dumps(payload).encode()


def _limit_bytes(scope: Scope) -> int | None:
    """The body limit of this request in bytes (``None``: no limit, e.g. before start-up)."""
    if scope.get("path", "").startswith(OWN_LIMIT_PATHS):
        return None
    app = scope.get("app")
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    settings = getattr(runtime, "settings", None)
    mb = getattr(settings, "max_request_mb", None)
    return None if mb is None else int(mb) << 20


def too_large_message(limit: int, size: int | None = None) -> str:
    """The 413 message: the size (when known) and the limit, both in MiB."""
    seen = f" ({size / 2**20:.1f} MiB)" if size is not None else ""
    return (f"Request body too large{seen}: the limit is {limit / 2**20:.0f} MiB "
            f"(VISIVO_MAX_REQUEST_MB).")


class RequestGuard:
    """ASGI middleware: request id, request-body limit, and internal errors answered as HTTP 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        path = scope.get("path", "")
        started = overflow = False
        replaced = False  # the application's own answer to an overflowing body is swallowed

        async def send_with_id(message: Message) -> None:
            nonlocal started, replaced
            if message["type"] == "http.response.start":
                if overflow and not started:
                    replaced = True
                    await answer(413, too_large_message(limit or 0))
                    return
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            elif replaced:
                return
            await send(message)

        async def answer(status: int, text: str) -> None:
            nonlocal started
            started = True
            body = _body(path, text)
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid.encode())]})
            await send({"type": "http.response.body", "body": body})

        limit = _limit_bytes(scope)
        if limit is not None:
            try:
                declared = int(headers.get("content-length", "") or -1)
            except ValueError:
                declared = -1
            if declared > limit:
                await answer(413, too_large_message(limit, declared))
                return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received, overflow
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = True
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send_with_id)
        except Exception as exc:
            if replaced:
                return
            if overflow and not started:
                await answer(413, too_large_message(limit or 0))
                return
            log.exception("internal error in %s %s (request %s)", scope.get("method"), path, rid)
            if not started:
                await answer(500, f"Internal error: {type(exc).__name__} (request {rid})")
            return
