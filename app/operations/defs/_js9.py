"""What the JS9 analysis tasks share: the parsed request, the response model and the planning.

The JS9 route (``POST /api/visualization/js9/analysis``, :mod:`app.routers.js9`) validates a body
by the JS9 API's rules into a :class:`Js9Call`, picks the operation of its task (or the CASA
engine's), and runs the plan through the one executor: same product cache, same tiers, same
device choice as every other operation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from app.compute.dispatch import JobContext
from app.errors import InvalidRequest
from app.operations.base import Call, Operation, Plan
from app.operations.models import ProductEnvelope
from app.services.js9.errors import Js9BadRequest
from app.services.js9.images import ImageView, open_view
from app.services.js9.regions import Region

TaskFunction = Callable[[JobContext, ImageView, Region | None, dict[str, Any]], dict[str, Any]]


class Js9Request(BaseModel):
    """The JS9 analysis body (see the JS9 CASA analysis API reference)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "task": "imstat", "image_path": "3c273_continuum.fits.gz",
        "region": {"shape": "circle", "x": 128, "y": 128, "r": 20}, "parameters": {}}]})
    task: str = Field(description="`imstat`, `imfit`, `imview`, `specflux` or `imval`.")
    image_path: str = Field(description="FITS file inside the data roots.")
    region: dict[str, Any] | None = Field(None, description="JS9 region (1-based image pixels; angles in degrees).")
    parameters: dict[str, Any] | None = Field(None, description="Task parameters, plus `engine` (`native`|`casa`).")


class Js9Result(ProductEnvelope):
    """A task's result (inside the JS9 answer's `result`)."""

    engine: str = Field(description="`native` or `casa`.")


class Js9Success(BaseModel):
    """The JS9 API's success body."""

    success: bool = Field(True, description="Always true here.")
    task: str = Field(description="The task run.")
    result: dict[str, Any] = Field(description="The task's result (CASA keys, 0-based CASA positions).")
    execution_time_sec: float = Field(description="Wall time of this answer (s); a cache hit is a lookup.")


class Js9Failure(BaseModel):
    """The JS9 API's HTTP 500 body: the task ran and failed."""

    success: bool = Field(False, description="Always false.")
    task: str = Field(description="The task.")
    error: str = Field(description="Why it failed.")
    execution_time_sec: float = Field(description="Wall time (s).")


class Js9Detail(BaseModel):
    """The JS9 API's 400/404/422 body."""

    detail: str = Field(description="What was wrong with the request.")


@dataclass(frozen=True)
class Js9Call:
    """A validated JS9 request: the resolved file, parsed region and parameters."""

    task: str
    image_path: str
    path: Path
    region: Region | None
    region_raw: Any
    parameters: dict[str, Any]
    engine: str
    stokes: str | None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class Js9Task(Operation):
    """Base of the JS9 tasks: a subclass names its task and its task function."""

    tag = "js9"
    Request = Js9Request
    Response = Js9Result
    #: Task name of the JS9 API this operation answers (``None``: chosen by engine, not by task).
    js9_task: ClassVar[str | None] = None

    @staticmethod
    def run_task(task: str) -> TaskFunction:  # pragma: no cover - every task overrides it
        raise NotImplementedError

    def plan(self, call: Call, body: Js9Call) -> Plan:
        images = call.runtime.js9_images
        run_task = self.run_task(body.task)
        engine = body.engine

        def job(ctx: JobContext) -> dict[str, Any]:
            try:
                view = open_view(body.path, stokes=body.stokes, cache=images)
            except InvalidRequest as exc:
                raise Js9BadRequest(f"File is not a FITS image: {body.image_path} ({exc.message})") from None
            try:
                result = run_task(ctx, view, body.region, body.parameters)
            finally:
                view.close()
            return {**result, "engine": engine, "computed_on": "gpu" if ctx.on_gpu else "cpu"}

        stat = body.path.stat()
        return Plan([], {"task": body.task, "region": _canonical(body.region_raw),
                         "parameters": _canonical(body.parameters)},
                    job=job, key_extra=[str(body.path), str(stat.st_mtime_ns), str(stat.st_size)])
