"""Errors raised by the VisIVO client."""

from __future__ import annotations

from typing import Any


class VisivoError(Exception):
    """The server refused a request, or a task failed.

    Attributes
    ----------
    message : str
        The server's own message (``error`` or ``detail`` of its answer), or the client's description.
    status : int or None
        HTTP status of the answer (200 for a logical failure ``{"valid": false}``), ``None`` when no
        answer came back.
    body : dict or None
        The server's decoded answer, when there was one.
    """

    def __init__(self, message: str, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(message if status is None else f"{message} (HTTP {status})")
        self.message = message
        self.status = status
        self.body = body


class VisivoConnectionError(VisivoError):
    """The server could not be reached (down, wrong URL, network error, timeout)."""


class VisivoAuthError(VisivoError):
    """The server rejected the token (HTTP 401) or the caller (HTTP 403)."""
