"""The JS9 analysis API's own error convention (not the ``/v1`` ``{"valid": false}`` one).

From the API reference (``js9-casa-analysis-api``):

- HTTP 400 — invalid request (task name, non-FITS file, region, parameter): ``{"detail": msg}``;
- HTTP 404 — image file not found (also any path outside the data roots): ``{"detail": msg}``;
- HTTP 422 — a body that is not a JSON object with ``task`` and ``image_path`` strings: ``{"detail": msg}``;
- HTTP 500 — the task itself failed: ``{"success": false, "task", "error", "execution_time_sec"}``.

Services raise these exceptions; :mod:`app.services.js9.analysis` turns them into responses.
"""

from __future__ import annotations


class Js9Error(Exception):
    """A request the analysis endpoint answers with ``{"detail": message}`` and ``status_code``."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Js9BadRequest(Js9Error):
    """HTTP 400: invalid task, non-FITS file, invalid region or parameter."""

    status_code = 400


class Js9NotFound(Js9Error):
    """HTTP 404: the image file does not exist (or lies outside the data roots)."""

    status_code = 404


class Js9InvalidBody(Js9Error):
    """HTTP 422: the body is not an object with string ``task`` and ``image_path``."""

    status_code = 422


class Js9TaskFailed(Exception):
    """HTTP 500: the task ran and failed (CASA error, fit failure ...), with a client-safe message."""
