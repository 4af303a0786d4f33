"""File browsing inside the data roots."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from app.deps import get_runtime
from app.responses import ok
from app.runtime import Runtime
from app.services import files

router = APIRouter(prefix="/v1/files", tags=["files"])


class PathRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str


@router.get("/list")
async def list_files(path: str = "", runtime: Runtime = Depends(get_runtime)) -> dict:
    """Directory entries (directories first), confined to the data roots."""
    return ok(await runtime.dispatcher.run_interactive(files.list_directory, runtime.roots, path))


@router.post("/header")
async def header(body: PathRequest, runtime: Runtime = Depends(get_runtime)) -> dict:
    """FITS header cards of the primary HDU as strings."""
    return ok(await runtime.dispatcher.run_interactive(files.header_cards, runtime.roots, body.path))
