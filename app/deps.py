"""FastAPI dependencies shared by the routers: the runtime and its parts, typed with ``Annotated``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.runtime import Runtime
from app.services.hips import HipsService
from app.services.samp import SampService
from app.services.sessions import SESSION_HEADER, Dataset


def get_runtime(request: Request) -> Runtime:
    """The server's state, built once at start-up (:func:`app.runtime.build_runtime`)."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_hips(request: Request) -> HipsService:
    """The HiPS service of the runtime."""
    service = get_runtime(request).hips
    assert service is not None, "build_runtime creates the HiPS service"
    return service


def get_samp(request: Request) -> SampService:
    """The SAMP service of the runtime."""
    service = get_runtime(request).samp
    assert service is not None, "build_runtime creates the SAMP service"
    return service


HipsDep = Annotated[HipsService, Depends(get_hips)]


def session_id_of(request: Request) -> str | None:
    """The ``X-Visivo-Session`` header, if any."""
    value = request.headers.get(SESSION_HEADER)
    return value.strip() if value else None


def dataset_for(request: Request, dataset_id: str) -> Dataset:
    """The dataset, if the caller may address it (404 otherwise)."""
    runtime = get_runtime(request)
    return runtime.sessions.dataset(dataset_id, session_id_of(request))
