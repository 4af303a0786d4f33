"""Admission of async tasks: a submission past the heavy queue's capacity answers HTTP 429 at once.

The dispatcher refuses a heavy job when every slot is taken and ``heavy_queue_limit`` jobs
already wait. A task reaches the dispatcher only when its coroutine first runs, after the
submission has been answered, so without this check every submission was accepted and the
excess ended later as "Server busy" tasks. Here the submission counts what is already
committed::

    committed = outstanding heavy jobs (running + waiting, all lanes)
              + slots of tasks accepted but not yet started
    refuse when committed + demand > Σ lane slots + heavy_queue_limit

``demand`` is the number of heavy jobs the operation will run (its parts, else 1 for a heavy
operation, 0 for an interactive one or a cached result), capped at the capacity so an
operation larger than the whole queue still runs on an idle server.
"""

from __future__ import annotations

from typing import Any

from app.errors import Busy

BUSY_MESSAGE = "Server busy: all heavy compute slots and the wait queue are full; retry shortly."


def heavy_demand(tier: str, parts: int) -> int:
    """Heavy jobs a plan will submit: its parts, else 1 for a heavy-tier operation, else 0."""
    if parts:
        return parts
    return 1 if tier == "heavy" else 0


def heavy_capacity(dispatcher: Any) -> int:
    """Heavy jobs the dispatcher accepts at once: every lane's slots plus the wait queue."""
    return sum(lane.capacity for lane in dispatcher.lanes) + int(dispatcher.queue_limit)


def admit(dispatcher: Any, tasks: Any, demand: int) -> int:
    """Check that ``demand`` more heavy jobs fit; returns the slots to book on the task.

    Raises
    ------
    Busy
        (HTTP 429) when the committed jobs plus ``demand`` exceed :func:`heavy_capacity`.
    """
    if demand <= 0:
        return 0
    capacity = heavy_capacity(dispatcher)
    committed = sum(lane.outstanding for lane in dispatcher.lanes) + tasks.pending_slots()
    need = min(demand, capacity)
    if committed + need > capacity:
        raise Busy(BUSY_MESSAGE)
    return need
