"""``POST /api/visualization/js9/analysis``: validation, cache, engine choice, dispatch and timing.

Order of checks (each failure answers with the reference's body, see :mod:`.errors`):

1. body shape — an object with string ``task`` and ``image_path`` (422);
2. ``task`` among :func:`valid_tasks` (400 ``Invalid task '…'. Valid tasks: [...]``);
3. ``image_path`` confined to the data roots and an existing file (404 ``Image file not found: …``;
   paths outside the roots look exactly like missing files);
4. ``region`` (400 ``Invalid region: …``) and ``parameters`` (400), ``engine`` availability (400);
5. FITS check (400 ``File is not a FITS image: …``);
6. the task's operation (:mod:`app.operations.defs`, ``js9_*``) through the one executor: the
   product cache (key: task, resolved path, region, parameters, file mtime and size), its tier and
   device from its capability row; the CASA engine is the ``js9_casa`` operation;
7. a task failure is HTTP 500 ``{"success": false, "task", "error", "execution_time_sec"}``.

``execution_time_sec`` is the wall time of *this* answer: for a cached result the time to find
it (well under 0.01 s), for a computed one the whole request (validation, reading, computing).

The valid tasks are the ``js9_task`` names of the registered operations.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import ApiError, InvalidRequest
from app.io.fits_reader import check_fits_magic
from app.io.paths import confine
from app.operations import registry
from app.operations.base import Call
from app.operations.defs._js9 import Js9Call, Js9Task
from app.operations.executor import execute
from app.runtime import Runtime
from app.services.js9 import casa_engine
from app.services.js9 import params as prm
from app.services.js9.errors import Js9BadRequest, Js9Error, Js9InvalidBody, Js9NotFound, Js9TaskFailed
from app.services.js9.regions import parse_region

log = logging.getLogger("visivo.js9")
#: Keys of the executor's envelope that are not part of a task's result.
_ENVELOPE = ("valid", "error", "cache_hit")


def task_operations() -> dict[str, type[Js9Task]]:
    """The registered native JS9 task operations by task name, in the API reference's order."""
    ops = {op.js9_task: op for op in registry.operations().values()
           if issubclass(op, Js9Task) and op.js9_task is not None}
    order = ["imstat", "imfit", "imview", "specflux", "imval"]
    return {name: ops[name] for name in sorted(ops, key=lambda n: order.index(n) if n in order else len(order))}


def valid_tasks() -> list[str]:
    """The tasks of the API reference, in its order (also the order quoted in the 400 message)."""
    return list(task_operations())


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


def validate(runtime: Runtime, raw_body: bytes) -> Js9Call:
    """Steps 1–5 of the module docstring: a :class:`Js9Call`, or the JS9 error to answer."""
    body = parse_body(raw_body)
    task, image_path = body["task"], body["image_path"]
    tasks = valid_tasks()
    if task not in tasks:
        raise Js9BadRequest(f"Invalid task '{task}'. Valid tasks: {tasks}")
    path = resolve_image(image_path, runtime.roots)
    region_raw = body.get("region")
    region = parse_region(region_raw)
    parameters = body.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise Js9BadRequest("Invalid parameters: expected a JSON object")
    default = runtime.settings.js9_engine if runtime.settings.js9_engine in prm.ENGINES else "native"
    engine = prm.get_choice(parameters, "engine", default, prm.ENGINES)
    if engine == "casa" and not casa_engine.available():
        raise Js9BadRequest(casa_engine.UNAVAILABLE)
    try:
        check_fits_magic(path)
    except InvalidRequest:
        raise Js9BadRequest(f"File is not a FITS image: {image_path}") from None
    return Js9Call(task, image_path, path, region, region_raw, parameters, engine, prm.get_stokes(parameters))


async def handle(runtime: Runtime, raw_body: bytes, session_id: str | None = None) -> Js9Response:
    """Answer one analysis request (never raises)."""
    t0 = time.perf_counter()
    task = ""
    try:
        call = validate(runtime, raw_body)
        task = call.task
        op = registry.get("js9_casa") if call.engine == "casa" else task_operations()[task]
        plan = op().plan(Call(runtime, session_id), call)
        body, hit = await execute(runtime, op, plan)
        result = {k: v for k, v in body.items() if k not in _ENVELOPE}
        return Js9Response(200, _success(task, result, t0), "hit" if hit else "miss")
    except Js9Error as exc:
        return Js9Response(exc.status_code, {"detail": exc.message})
    except (Js9TaskFailed, ApiError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        return Js9Response(500, _failure(task, message, t0))
    except Exception as exc:  # a bug or an unexpected library error: still the reference's 500 body
        log.exception("js9 %s failed", task)
        return Js9Response(500, _failure(task, f"{task} failed: {type(exc).__name__}: {exc}", t0))


def _success(task: str, result: dict[str, Any], t0: float) -> dict[str, Any]:
    return {"success": True, "task": task, "result": result, "execution_time_sec": _elapsed(t0)}


def _failure(task: str, message: str, t0: float) -> dict[str, Any]:
    return {"success": False, "task": task, "error": message, "execution_time_sec": _elapsed(t0)}


def status(runtime: Runtime) -> dict[str, Any]:
    """Engines, tasks and cache counters (for the viewer page)."""
    default = runtime.settings.js9_engine if runtime.settings.js9_engine in prm.ENGINES else "native"
    cache = runtime.cache
    return {
        "tasks": valid_tasks(),
        "engines": {"native": True, "casa": casa_engine.available()},
        "default_engine": default,
        "cache": {"entries": len(cache), "capacity": cache.capacity, "hits": cache.hits, "misses": cache.misses},
        "open_images": len(runtime.js9_images),
    }
