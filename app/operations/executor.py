"""The one execution path: product cache, tier and lane choice, error mapping, tasks.

Every computation the server runs — every registered operation, JS9's tasks included —
goes through :func:`execute`: look the answer up in the product cache, otherwise run the
plan's job on the tier its capability row gives (interactive pool, or a heavy slot on the
least-loaded lane, on the GPU when the row says there is a GPU kernel and the backend has
a device), map a kernel's ``ValueError`` to the API's ``InvalidRequest``, and cache the answer.
:func:`start_task` runs the same thing in the background as an async task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.compute.product_cache import product_key
from app.errors import InvalidRequest
from app.operations.base import Operation, Plan
from app.responses import ok
from app.services.admission import admit, heavy_demand
from app.services.tasks import TaskRecord

if TYPE_CHECKING:
    from app.runtime import Runtime

Progress = Callable[[float], None] | None


def cache_key(op: type[Operation], plan: Plan) -> str | None:
    """The product-cache key of a plan (``None`` when the operation is not cached)."""
    if not op.cached:
        return None
    return product_key(op.name, [d.version_key for d in plan.datasets] + plan.key_extra, plan.params)


async def execute(
    runtime: Runtime,
    op: type[Operation],
    plan: Plan,
    *,
    progress: Progress = None,
    cancel_event: threading.Event | None = None,
) -> tuple[dict[str, Any], bool]:
    """Run (or fetch from the cache) one planned operation; returns ``(body, cache_hit)``.

    ``body`` is the success envelope (``valid: true, error: ""``) with the job's payload and
    ``cache_hit``.
    """
    key = cache_key(op, plan)
    if key is not None:
        cached = runtime.cache.get(key)
        if cached is not None and (plan.cache_check is None or plan.cache_check(cached)):
            return {**cached, "cache_hit": True}, True
    try:
        result = await _run(runtime, op, plan, progress=progress, cancel_event=cancel_event)
    except ValueError as exc:  # a kernel refusing its input (documented ValueErrors): the client's error
        raise InvalidRequest(str(exc)) from None
    if plan.finish is not None:
        result = plan.finish(result)
    body = ok(result)
    if key is not None:
        runtime.cache.put(key, body)
    return {**body, "cache_hit": False}, False


async def _run(runtime: Runtime, op: type[Operation], plan: Plan, *, progress: Progress,
               cancel_event: threading.Event | None) -> dict[str, Any]:
    cap = op.capability
    gpu = runtime.backend.runs_on_gpu(cap)
    dispatcher = runtime.dispatcher
    if cap.distributable and runtime.cluster is not None:  # tiles go to the Dask cluster's workers
        plan = _on_cluster(plan, runtime.cluster)
        gpu = gpu and cap.dask_size_gated  # size-gated operations keep the server's GPU
    if plan.parts:
        return await _run_parts(runtime, op, plan, gpu=gpu, progress=progress, cancel_event=cancel_event)
    assert plan.job is not None, f"operation {op.name} planned neither a job nor parts"
    if cap.tier == "heavy":
        return await dispatcher.run_heavy(plan.job, cancel_event=cancel_event, progress=progress, gpu=gpu,
                                          capability=cap)
    return await dispatcher.run_interactive_job(plan.job, gpu=gpu, capability=cap)


def _on_cluster(plan: Plan, cluster: Any) -> Plan:
    """The plan with its job (or parts) given the Dask lane on their context (``ctx.cluster``).

    A job's answer whose tiles ran on the cluster gets ``cluster``: ``{"tiles": n, "kernels":
    {"numpy" | "numba" | "cupy": tiles}, "fallback": [why a GPU tile ran the CPU kernels, ...]}``.
    """

    def bind(job: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(ctx: Any) -> Any:
            ctx.cluster = cluster
            result = job(ctx)
            tiles = getattr(ctx, "cluster_tiles", None)
            if tiles and isinstance(result, dict):
                result = {**result, "cluster": tiles}
            return result

        return run

    def combine(results: list[Any]) -> Any:  # the parts' tallies summed into the combined answer
        merged = plan.combine(results)
        tallies = [r["cluster"] for r in results if isinstance(r, dict) and r.get("cluster")]
        if not tallies or not isinstance(merged, dict):
            return merged
        kernels: dict[str, int] = {}
        for tally in tallies:
            for kernel, n in tally["kernels"].items():
                kernels[kernel] = kernels.get(kernel, 0) + n
        fallback = list(dict.fromkeys(f for tally in tallies for f in tally["fallback"]))
        return {**merged, "cluster": {"tiles": sum(t["tiles"] for t in tallies), "kernels": kernels,
                                      "fallback": fallback}}

    return dataclasses.replace(plan, job=bind(plan.job) if plan.job is not None else None,
                               parts=[bind(part) for part in plan.parts],
                               combine=combine if plan.combine is not None else None)


async def _run_parts(runtime: Runtime, op: type[Operation], plan: Plan, *, gpu: bool, progress: Progress,
                     cancel_event: threading.Event | None) -> dict[str, Any]:
    """Run every part as its own heavy job (concurrently, each taking a slot) and combine them."""
    fractions = [0.0] * len(plan.parts)
    event = cancel_event or threading.Event()

    def reporter(i: int) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            fractions[i] = fraction
            if progress is not None:
                progress(sum(fractions) / len(fractions))

        return report

    jobs = [
        runtime.dispatcher.run_heavy(part, cancel_event=event, progress=reporter(i), gpu=gpu,
                                     capability=op.capability)
        for i, part in enumerate(plan.parts)
    ]
    try:
        results = await asyncio.gather(*jobs)
    except BaseException:
        event.set()
        raise
    assert plan.combine is not None, f"operation {op.name} planned parts without combine"
    # stitching the parts (full-size maps, base64, a saved FITS) stays off the event loop
    return await asyncio.to_thread(plan.combine, list(results))


def start_task(runtime: Runtime, op: type[Operation], plan: Plan, *, session_id: str | None) -> dict[str, Any]:
    """Queue the plan as an async task; the answer carries ``task_id``.

    The task belongs to the session of its datasets (else the caller's), with the datasets' rule
    for access. A heavy submission that would not fit the slots plus the wait queue answers 429 at
    once (:mod:`app.services.admission`).
    """
    key = cache_key(op, plan)
    cached = key is not None and key in runtime.cache
    demand = 0 if cached else heavy_demand(op.capability.tier, len(plan.parts))
    slots = admit(runtime.dispatcher, runtime.tasks, demand)

    async def work(record: TaskRecord) -> tuple[dict[str, Any], bool]:
        return await execute(runtime, op, plan, progress=record.set_progress, cancel_event=record.cancel_event)

    owner = plan.datasets[0].session_id if plan.datasets else session_id
    record = runtime.tasks.create(op.name, work, session_id=owner, slots=slots)
    described = runtime.tasks.describe(record)
    return ok(task_id=record.task_id, status=described["status"], operation=op.name, cache_hit=bool(cached))
