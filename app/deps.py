"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request

from app.runtime import Runtime
from app.services.sessions import SESSION_HEADER, Dataset


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def session_id_of(request: Request) -> str | None:
    """The ``X-Visivo-Session`` header, if any."""
    value = request.headers.get(SESSION_HEADER)
    return value.strip() if value else None


def dataset_for(request: Request, dataset_id: str) -> Dataset:
    """The dataset, if it belongs to the caller's session (404 otherwise)."""
    runtime = get_runtime(request)
    return runtime.sessions.dataset(dataset_id, session_id_of(request))
