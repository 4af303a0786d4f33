"""Name resolution: ``POST /v1/resolve/target``."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from app.deps import get_runtime
from app.responses import ok
from app.runtime import Runtime
from app.services.resolve import resolve_target, sesame_urls_from

router = APIRouter(prefix="/v1/resolve", tags=["resolve"])


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


@router.post("/target")
async def target(body: ResolveRequest, runtime: Runtime = Depends(get_runtime)) -> dict:
    """``ra_deg``, ``dec_deg`` (ICRS), ``resolved_name`` and the ``resolver`` that answered."""
    urls = sesame_urls_from(runtime.settings.sesame_url)
    return ok(await runtime.dispatcher.run_interactive(lambda: resolve_target(body.name, sesame_urls=urls)))
