"""Compute dispatch: tiers, lanes, device choice, busy, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.compute.backend import Backend
from app.compute.dispatch import Dispatcher, JobContext, Lane, choose_lane
from app.errors import Busy, Cancelled


def _dispatcher(lanes: list[Lane] | None = None, *, queue_limit: int = 8, heavy_slots: int = 1) -> Dispatcher:
    return Dispatcher(Backend("cpu"), workers=2, heavy_slots=heavy_slots, gpu_slots_per_device=2,
                      queue_limit=queue_limit, chunk_bytes=1 << 20, lanes=lanes)


def test_interactive_never_waits_behind_heavy() -> None:
    async def scenario() -> None:
        dispatcher = _dispatcher(heavy_slots=2)
        release = threading.Event()

        def slow_heavy(ctx: JobContext) -> str:
            release.wait(10)
            return "heavy"

        heavy = [asyncio.create_task(dispatcher.run_heavy(slow_heavy)) for _ in range(3)]  # 2 run, 1 waits
        await asyncio.sleep(0.05)
        assert dispatcher.lanes[0].running == 2 and dispatcher.waiting() == 1
        started = time.perf_counter()
        assert await asyncio.wait_for(dispatcher.run_interactive(lambda: 41 + 1), timeout=2) == 42
        assert time.perf_counter() - started < 2
        assert not any(t.done() for t in heavy)
        release.set()
        assert await asyncio.gather(*heavy) == ["heavy"] * 3
        dispatcher.shutdown()

    asyncio.run(scenario())


def test_busy_when_queue_full() -> None:
    async def scenario() -> None:
        dispatcher = _dispatcher(queue_limit=1)
        release = threading.Event()
        jobs = [asyncio.create_task(dispatcher.run_heavy(lambda ctx: release.wait(10))) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):
            await dispatcher.run_heavy(lambda ctx: None)
        release.set()
        await asyncio.gather(*jobs)
        dispatcher.shutdown()

    asyncio.run(scenario())


def test_cancel_stops_at_next_chunk_and_frees_slot() -> None:
    async def scenario() -> None:
        dispatcher = _dispatcher()
        chunks_done = []

        def chunked(ctx: JobContext) -> None:
            for i in range(1000):
                ctx.progress(i / 1000)
                time.sleep(0.005)
                chunks_done.append(i)

        task = asyncio.create_task(dispatcher.run_heavy(chunked))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert dispatcher.lanes[0].running == 0 and dispatcher.lanes[0].outstanding == 0
        assert len(chunks_done) < 1000
        # the slot is free again: a new job runs at once
        assert await asyncio.wait_for(dispatcher.run_heavy(lambda ctx: "ok"), timeout=2) == "ok"
        dispatcher.shutdown()

    asyncio.run(scenario())


def test_cancel_event_raises_in_job() -> None:
    ctx = JobContext(Backend("cpu"), None, 1 << 20)
    ctx.check_cancelled()
    ctx.cancel_event.set()
    with pytest.raises(Cancelled):
        ctx.progress(0.5)


def test_choose_lane_fewest_outstanding_then_resident_then_index() -> None:
    lanes = [Lane("gpu:0", 2, 0, outstanding=2), Lane("gpu:1", 2, 1, outstanding=1), Lane("gpu:2", 2, 2, 1)]
    assert choose_lane(lanes).device == 1
    assert choose_lane(lanes, preferred_device=2).device == 2
    lanes[0].outstanding = 0
    assert choose_lane(lanes, preferred_device=2).device == 0


def test_fake_devices_spread_jobs() -> None:
    async def scenario() -> None:
        lanes = [Lane("gpu:0", 1, 0), Lane("gpu:1", 1, 1)]
        dispatcher = _dispatcher(lanes)
        seen: list[int | None] = []
        release = threading.Event()

        def job(ctx: JobContext) -> None:
            seen.append(ctx.device)
            release.wait(5)

        # gpu=False: fake devices must not enter CUDA; the lane (device slot) is still chosen
        tasks = [asyncio.create_task(dispatcher.run_heavy(job, gpu=False)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert [lane.running for lane in dispatcher.lanes] == [1, 1]
        release.set()
        await asyncio.gather(*tasks)
        assert seen == [None, None]
        dispatcher.shutdown()

    asyncio.run(scenario())
