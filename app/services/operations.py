"""Running operations: product cache, interactive/heavy dispatch and async tasks in one place.

A route describes an operation by its name (a key of the capability table), the
datasets it reads, its canonical parameters and a job ``job(ctx) -> dict``. This module
serves a cached result when one exists (``cache_hit: true``), otherwise runs the job on
the right tier and caches what it returns.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.compute.capabilities import CAPABILITIES
from app.compute.dispatch import JobContext
from app.compute.product_cache import product_key
from app.errors import InvalidRequest
from app.responses import ok
from app.runtime import Runtime
from app.services.admission import admit, heavy_demand
from app.services.sessions import Dataset
from app.services.tasks import TaskRecord

Job = Callable[[JobContext], dict[str, Any]]


@dataclass
class Operation:
    """One request for a computed product."""

    name: str
    datasets: list[Dataset]
    params: dict[str, Any]
    job: Job | None = None
    cacheable: bool = True
    extra_key: list[str] = field(default_factory=list)
    #: Independent heavy parts run concurrently (e.g. line-width row chunks), merged by ``combine``.
    parts: list[Job] = field(default_factory=list)
    combine: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
    #: Runs in the event loop after the job (e.g. registering a new dataset); returns the final body.
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    #: Whether a cached body is still usable (e.g. the dataset it registered is still open).
    cache_check: Callable[[dict[str, Any]], bool] | None = None

    def key(self) -> str:
        return product_key(self.name, [d.version_key for d in self.datasets] + self.extra_key, self.params)


async def execute(
    runtime: Runtime,
    op: Operation,
    *,
    progress: Callable[[float], None] | None = None,
    cancel_event: threading.Event | None = None,
) -> tuple[dict[str, Any], bool]:
    """Run (or fetch from the cache) an operation; returns ``(body, cache_hit)``."""
    key = op.key() if op.cacheable else None
    if key is not None:
        cached = runtime.cache.get(key)
        if cached is not None and (op.cache_check is None or op.cache_check(cached)):
            return {**cached, "cache_hit": True}, True
    try:
        result = await _run(runtime, op, progress=progress, cancel_event=cancel_event)
    except ValueError as exc:  # a kernel refusing its input (documented ValueErrors): the client's error
        raise InvalidRequest(str(exc)) from None
    if op.finish is not None:
        result = op.finish(result)
    body = ok(result)
    if key is not None:
        runtime.cache.put(key, body)
    return {**body, "cache_hit": False}, False


async def _run(runtime: Runtime, op: Operation, *, progress, cancel_event) -> dict[str, Any]:
    cap = CAPABILITIES[op.name]
    gpu = runtime.backend.runs_on_gpu(op.name)
    if op.parts:
        result = await _run_parts(runtime, op, gpu=gpu, progress=progress, cancel_event=cancel_event)
    elif cap.tier == "heavy":
        result = await runtime.dispatcher.run_heavy(op.job, cancel_event=cancel_event, progress=progress, gpu=gpu)
    else:
        result = await runtime.dispatcher.run_interactive_job(op.job, gpu=gpu)
    return result


async def _run_parts(runtime: Runtime, op: Operation, *, gpu: bool, progress, cancel_event) -> dict[str, Any]:
    """Run every part as its own heavy job (concurrently, each taking a slot) and combine them."""
    fractions = [0.0] * len(op.parts)
    event = cancel_event or threading.Event()

    def reporter(i: int) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            fractions[i] = fraction
            if progress is not None:
                progress(sum(fractions) / len(fractions))

        return report

    jobs = [
        runtime.dispatcher.run_heavy(part, cancel_event=event, progress=reporter(i), gpu=gpu)
        for i, part in enumerate(op.parts)
    ]
    try:
        results = await asyncio.gather(*jobs)
    except BaseException:
        event.set()
        raise
    assert op.combine is not None
    return op.combine(list(results))


async def run_sync(runtime: Runtime, op: Operation) -> dict[str, Any]:
    body, _ = await execute(runtime, op)
    return body


def start_task(runtime: Runtime, op: Operation) -> dict[str, Any]:
    """Queue the operation as an async task; the answer carries ``task_id``."""
    cached = op.cacheable and op.key() in runtime.cache

    async def work(record: TaskRecord) -> tuple[dict[str, Any], bool]:
        return await execute(runtime, op, progress=record.set_progress, cancel_event=record.cancel_event)

    slots = admit(runtime.dispatcher, runtime.tasks, 0 if cached else heavy_demand(op))  # 429 at once when full
    owner = op.datasets[0].session_id if op.datasets else None
    record = runtime.tasks.create(op.name, work, session_id=owner, slots=slots)
    described = runtime.tasks.describe(record)
    return ok(task_id=record.task_id, status=described["status"], operation=op.name,
              cache_hit=bool(cached))
