"""HTTP transport: token, session header, JSON answers and the server's error conventions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from visivo_client.errors import VisivoAuthError, VisivoConnectionError, VisivoError

DEFAULT_URL = "http://127.0.0.1:8000"
TOKEN_HEADER = "X-Visivo-Token"
SESSION_HEADER = "X-Visivo-Session"


def resolve_token(token: str | None = None) -> str | None:
    """The API token: ``token``, else ``$VISIVO_TOKEN``, else the file ``$VISIVO_TOKEN_FILE`` or ``~/.visivo_token``."""
    if token:
        return token.strip()
    env = os.environ.get("VISIVO_TOKEN", "").strip()
    if env:
        return env
    path = Path(os.environ.get("VISIVO_TOKEN_FILE") or Path.home() / ".visivo_token").expanduser()
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


def resolve_url(url: str | None = None) -> str:
    """The server URL: ``url``, else ``$VISIVO_URL``, else ``http://127.0.0.1:8000``."""
    return (url or os.environ.get("VISIVO_URL") or DEFAULT_URL).rstrip("/")


def _message(body: Any, fallback: str) -> str:
    """The server's message in any of its error shapes (``error``, ``detail``)."""
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            value = body.get(key)
            if value:
                return value if isinstance(value, str) else json.dumps(value)
    return fallback


class Transport:
    """One HTTP connection pool to the server, with the token and the session id.

    Parameters
    ----------
    url : str
        Server base URL.
    token : str or None
        API token (``X-Visivo-Token``); ``None`` sends none (the server answers 401).
    timeout : float
        Seconds allowed for connecting and for each answer.
    """

    def __init__(self, url: str, token: str | None, timeout: float = 120.0) -> None:
        self.url = url
        self.token = token
        self.session_id: str | None = None
        headers = {TOKEN_HEADER: token} if token else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict[str, str]:
        return {SESSION_HEADER: self.session_id} if self.session_id else {}

    def send(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
             raw: bool = False) -> Any:
        """Send a request; return the decoded JSON (or the bytes with ``raw``), raising :class:`VisivoError`.

        A logical failure (HTTP 200 ``{"valid": false}``, JS9's ``{"success": false}``) raises too,
        with ``status`` 200.
        """
        try:
            response = self._http.request(method, path, json=json_body, params=params, headers=self._headers())
        except httpx.TimeoutException as exc:
            raise VisivoConnectionError(f"The server at {self.url} did not answer in time ({exc}).") from None
        except httpx.TransportError as exc:
            raise VisivoConnectionError(f"Cannot reach the VisIVO server at {self.url}: {exc}. "
                                        "Is it running (`visivo-server`)?") from None
        if raw and response.status_code == 200:
            return response.content
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if status in (401, 403):
            hint = " Pass token=..., set VISIVO_TOKEN or check ~/.visivo_token." if status == 401 else ""
            raise VisivoAuthError(_message(body, "Not authorised.") + hint, status, body)
        if status >= 400:
            raise VisivoError(_message(body, response.text[:500] or response.reason_phrase), status, body)
        if body is None:
            raise VisivoError(f"The server answered {path} with something that is not JSON.", status)
        if isinstance(body, dict) and (body.get("valid") is False or body.get("success") is False):
            raise VisivoError(_message(body, "The server refused the request."), status, body)
        return body

    def get(self, route: str, params: dict[str, Any] | None = None) -> Any:
        return self.send("GET", route, params={k: v for k, v in (params or {}).items() if v is not None} or None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.send("POST", path, json_body={k: v for k, v in body.items() if v is not None})

    def delete(self, path: str) -> Any:
        return self.send("DELETE", path)

    def adopt_session(self, answer: dict[str, Any]) -> None:
        """Keep the session the server created (the first open answers it)."""
        session = answer.get("session_id")
        if session and not self.session_id:
            self.session_id = session
