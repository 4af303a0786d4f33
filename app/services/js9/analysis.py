"""``POST /api/visualization/js9/analysis``: validation, cache, engine choice, dispatch and timing.

Order of checks (each failure answers with the reference's body, see :mod:`.errors`):

1. body shape — an object with string ``task`` and ``image_path`` (422);
2. ``task`` among :data:`VALID_TASKS` (400 ``Invalid task '…'. Valid tasks: [...]``);
3. ``image_path`` confined to the data roots and an existing file (404 ``Image file not found: …``;
   paths outside the roots look exactly like missing files);
4. ``region`` (400 ``Invalid region: …``) and ``parameters`` (400), ``engine`` availability (400);
5. cache lookup (key: task, resolved path, region, parameters, file mtime and size);
6. FITS check (400 ``File is not a FITS image: …``), then the task on its engine;
7. a task failure is HTTP 500 ``{"success": false, "task", "error", "execution_time_sec"}``.

``execution_time_sec`` is the wall time of *this* answer: for a cached result the time to find
it (well under 0.01 s), for a computed one the whole request (validation, reading, computing).

Dispatch: the native engine runs on the tier and device the capability table gives its
operation (``js9_imstat`` …; interactive by default, ``imfit`` heavy), on the GPU when the
backend has one and the operation has a GPU kernel; the CASA engine runs on the heavy lane
without a GPU (CASA is serialised by a lock).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.compute.capabilities import CAPABILITIES
from app.compute.dispatch import JobContext
from app.errors import Busy, InvalidRequest
from app.io.fits_reader import check_fits_magic
from app.io.paths import confine
from app.runtime import Runtime
from app.services.js9 import casa_engine, native_engine
from app.services.js9 import params as prm
from app.services.js9.cache import ResultCache, cache_key
from app.services.js9.errors import Js9BadRequest, Js9Error, Js9InvalidBody, Js9NotFound, Js9TaskFailed
from app.services.js9.images import ImageCache, open_view
from app.services.js9.regions import parse_region

log = logging.getLogger("visivo.js9")

#: The tasks of the API reference, in its order (also the order quoted in the 400 message).
VALID_TASKS = ["imstat", "imfit", "imview", "specflux", "imval"]
#: Tier of each task when the capability table has no row for its operation.
DEFAULT_TIERS = {"imstat": "interactive", "imfit": "heavy", "imview": "interactive", "specflux": "interactive",
                 "imval": "interactive"}


@dataclass
class Js9Response:
    """Status, JSON body and cache state (``hit``, ``miss`` or ``none``) of one answer."""

    status: int
    body: dict[str, Any]
    cache: str = "none"


def _elapsed(t0: float) -> float:
    return round(time.perf_counter() - t0, 6)


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode and shape-check the request body (422 ``{"detail"}`` when it is not usable)."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise Js9InvalidBody("Invalid request: the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Js9InvalidBody("Invalid request: the body must be a JSON object")
    for field in ("task", "image_path"):
        if field not in body or body[field] is None:
            raise Js9InvalidBody(f"Invalid request: field '{field}' is required")
        if not isinstance(body[field], str):
            raise Js9InvalidBody(f"Invalid request: field '{field}' must be a string")
    return body


def resolve_image(image_path: str, roots: tuple[Path, ...]) -> Path:
    """The file ``image_path`` names inside the data roots (404 otherwise)."""
    try:
        return confine(image_path, roots)
    except InvalidRequest:
        raise Js9NotFound(f"Image file not found: {image_path}") from None


class AnalysisService:
    """One per application: the result cache and the request pipeline."""

    def __init__(self, *, default_engine: str = "native", cache_size: int = 100) -> None:
        self.default_engine = default_engine if default_engine in prm.ENGINES else "native"
        self.cache = ResultCache(cache_size)
        self.images = ImageCache()

    async def handle(self, runtime: Runtime, raw_body: bytes) -> Js9Response:
        """Answer one analysis request (never raises)."""
        t0 = time.perf_counter()
        task = ""
        try:
            body = parse_body(raw_body)
            task, image_path = body["task"], body["image_path"]
            if task not in VALID_TASKS:
                raise Js9BadRequest(f"Invalid task '{task}'. Valid tasks: {VALID_TASKS}")
            path = resolve_image(image_path, runtime.roots)
            region_raw = body.get("region")
            region = parse_region(region_raw)
            parameters = body.get("parameters")
            if parameters is None:
                parameters = {}
            if not isinstance(parameters, dict):
                raise Js9BadRequest("Invalid parameters: expected a JSON object")
            engine = prm.get_choice(parameters, "engine", self.default_engine, prm.ENGINES)
            if engine == "casa" and not casa_engine.available():
                raise Js9BadRequest(casa_engine.UNAVAILABLE)
            key = cache_key(task, str(path), region_raw, parameters, path.stat())
            cached = self.cache.get(key)
            if cached is not None:
                return Js9Response(200, self._success(task, cached, t0), "hit")
            try:
                check_fits_magic(path)
            except InvalidRequest:
                raise Js9BadRequest(f"File is not a FITS image: {image_path}") from None
            result = await self._run(runtime, engine, task, path, image_path, region, parameters)
            self.cache.put(key, result)
            return Js9Response(200, self._success(task, result, t0), "miss")
        except Js9Error as exc:
            return Js9Response(exc.status_code, {"detail": exc.message})
        except Js9TaskFailed as exc:
            return Js9Response(500, self._failure(task, str(exc), t0))
        except Busy as exc:
            return Js9Response(500, self._failure(task, exc.message, t0))
        except Exception as exc:  # a bug or an unexpected library error: still the reference's 500 body
            log.exception("js9 %s failed", task)
            return Js9Response(500, self._failure(task, f"{task} failed: {type(exc).__name__}: {exc}", t0))

    @staticmethod
    def _success(task: str, result: dict[str, Any], t0: float) -> dict[str, Any]:
        return {"success": True, "task": task, "result": result, "execution_time_sec": _elapsed(t0)}

    @staticmethod
    def _failure(task: str, message: str, t0: float) -> dict[str, Any]:
        return {"success": False, "task": task, "error": message, "execution_time_sec": _elapsed(t0)}

    async def _run(self, runtime: Runtime, engine: str, task: str, path: Path, image_path: str, region: Any,
                   parameters: dict[str, Any]) -> dict[str, Any]:
        stokes = prm.get_stokes(parameters)
        tasks = casa_engine.TASKS if engine == "casa" else native_engine.TASKS
        run_task = tasks[task]

        def job(ctx: JobContext) -> dict[str, Any]:
            try:
                view = open_view(path, stokes=stokes, cache=self.images)
            except InvalidRequest as exc:
                raise Js9BadRequest(f"File is not a FITS image: {image_path} ({exc.message})") from None
            try:
                result = run_task(ctx, view, region, parameters)
            finally:
                view.close()
            result["engine"] = engine
            result["computed_on"] = "gpu" if ctx.on_gpu else "cpu"
            return result

        dispatcher = runtime.dispatcher
        if engine == "casa":
            return await dispatcher.run_heavy(job, gpu=False)
        operation, module = native_engine.OPERATIONS[task]
        cap = CAPABILITIES.get(operation)
        gpu = module is not None and runtime.backend.runs_on_gpu(operation)
        tier = cap.tier if cap is not None else DEFAULT_TIERS[task]
        if tier == "heavy":
            return await dispatcher.run_heavy(job, gpu=gpu)
        return await dispatcher.run_interactive_job(job, gpu=gpu)

    def status(self) -> dict[str, Any]:
        """Engines, tasks and cache counters (for the viewer page)."""
        return {
            "tasks": VALID_TASKS,
            "engines": {"native": True, "casa": casa_engine.available()},
            "default_engine": self.default_engine,
            "cache": {"entries": len(self.cache), "capacity": self.cache.capacity, "hits": self.cache.hits,
                      "misses": self.cache.misses},
            "open_images": len(self.images),
        }
