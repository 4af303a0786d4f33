"""Domain exceptions, mapped to the API's error convention in one place (:mod:`app.main`).

Logical failures answer HTTP 200 with ``{"valid": false, "error": msg}``; a few
conditions carry their own status (401 auth, 404 unknown dataset/session, 429 busy).
"""

from __future__ import annotations


class ApiError(Exception):
    """A failure the client should see as ``{"valid": false, "error": message}``."""

    status_code: int = 200

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class InvalidRequest(ApiError):
    """Bad parameters or data the operation cannot work on (HTTP 200, ``valid: false``)."""


class NotFound(ApiError):
    """Unknown dataset, session or task (HTTP 404)."""

    status_code = 404


class Unauthorized(ApiError):
    """Missing or wrong token (HTTP 401)."""

    status_code = 401


class Busy(ApiError):
    """Every slot and the wait queue are full (HTTP 429)."""

    status_code = 429


class Cancelled(Exception):
    """Raised inside a job when its task was cancelled; the job stops at its next chunk."""
