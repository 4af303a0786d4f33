"""Asynchronous task registry: create, poll, cancel, expire.

A task wraps one heavy computation. Status goes ``pending → running → done|error``
(the API reference's spelling); with ``VISIVO_TASK_STATUS_STYLE=legacy`` the
terminal states read ``completed|failed`` for older desktop clients. ``DELETE``
sets the job's cancel event (the job stops at its next chunk and frees its slot)
and removes the entry. Entries expire ``VISIVO_TASK_TTL_SECONDS`` after their last
touch (creation, a poll, completion).

A task belongs to the session of the datasets it reads, with the rule of datasets: a
request naming no session, or that session, reaches it by id; a request naming another
session gets HTTP 404 naming the session asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.errors import ApiError, Cancelled
from app.services.sessions import lookup_error

_LEGACY = {"done": "completed", "error": "failed"}


@dataclass
class TaskRecord:
    task_id: str
    operation: str
    status: str = "pending"
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: str = ""
    cache_hit: bool = False
    created_at: float = field(default_factory=time.time)
    touched_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    handle: asyncio.Task | None = None
    #: The owning session (``None``: reachable from every session).
    session_id: str | None = None
    #: Heavy jobs booked at admission, counted while the task is still ``pending``.
    slots: int = 0

    def set_progress(self, fraction: float) -> None:
        self.progress = fraction


class TaskRegistry:
    """In-process registry of async tasks."""

    def __init__(self, ttl_seconds: int, status_style: str = "reference") -> None:
        self.ttl_seconds = ttl_seconds
        self.status_style = status_style
        self._tasks: dict[str, TaskRecord] = {}

    def _spell(self, status: str) -> str:
        return _LEGACY.get(status, status) if self.status_style == "legacy" else status

    def expire(self, now: float | None = None) -> int:
        """Drop entries untouched for longer than the TTL (cancelling any still running)."""
        if self.ttl_seconds <= 0:
            return 0
        now = time.time() if now is None else now
        stale = [t for t in self._tasks.values() if now - t.touched_at > self.ttl_seconds]
        for task in stale:
            self._drop(task)
        return len(stale)

    def _drop(self, task: TaskRecord) -> None:
        task.cancel_event.set()
        if task.handle is not None and not task.handle.done():
            task.handle.cancel()
        self._tasks.pop(task.task_id, None)

    def create(
        self,
        operation: str,
        work: Callable[[TaskRecord], Awaitable[tuple[dict[str, Any], bool]]],
        *,
        session_id: str | None = None,
        slots: int = 0,
    ) -> TaskRecord:
        """Start ``work(record)`` (returns ``(result, cache_hit)``) as a background task of ``session_id``."""
        self.expire()
        record = TaskRecord(task_id=f"task_{secrets.token_hex(8)}", operation=operation, session_id=session_id,
                            slots=slots)
        self._tasks[record.task_id] = record

        async def runner() -> None:
            record.status = "running"
            try:
                result, hit = await work(record)
            except (Cancelled, asyncio.CancelledError):
                record.status, record.error = "error", "Task cancelled."
            except ApiError as exc:
                record.status, record.error = "error", exc.message
            except Exception as exc:  # a bug in an operation: report it, never a traceback
                record.status, record.error = "error", f"Internal error: {type(exc).__name__}: {exc}"
            else:
                record.result, record.cache_hit = result, hit
                if result.get("valid", True) is False:
                    record.status, record.error = "error", str(result.get("error", ""))
                else:
                    record.status, record.progress = "done", 1.0
            record.finished_at = record.touched_at = time.time()

        record.handle = asyncio.get_running_loop().create_task(runner())
        return record

    def get(self, task_id: str, session_id: str | None = None) -> TaskRecord:
        """The task, if ``session_id`` is ``None``/empty or its owner's; 404 naming the session otherwise."""
        self.expire()
        task = self._tasks.get(task_id)
        sid = (session_id or "").strip() or None
        if task is None or (sid is not None and task.session_id is not None and sid != task.session_id):
            raise lookup_error("Task", task_id, sid)
        task.touched_at = time.time()
        return task

    def pending_slots(self) -> int:
        """Heavy jobs booked by tasks accepted but not yet started (see :mod:`app.services.admission`)."""
        return sum(t.slots for t in self._tasks.values() if t.status == "pending")

    async def delete(self, task_id: str, session_id: str | None = None) -> TaskRecord:
        """Cancel (if running) and remove; waits until the job has released its slot."""
        task = self.get(task_id, session_id)
        self._drop(task)
        if task.handle is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task.handle), timeout=30)
        return task

    def describe(self, task: TaskRecord) -> dict[str, Any]:
        return {
            "valid": True,
            "error": task.error,
            "task_id": task.task_id,
            "operation": task.operation,
            "status": self._spell(task.status),
            "progress": round(task.progress, 4),
            "cache_hit": task.cache_hit,
            "result": task.result if task.status == "done" else None,
            "age_seconds": round(time.time() - task.created_at, 3),
        }

    def __len__(self) -> int:
        return len(self._tasks)

    def listing(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Live tasks (of ``session_id`` when given), oldest first, without results (``GET /v1/tasks``)."""
        self.expire()
        sid = (session_id or "").strip() or None
        mine = [t for t in self._tasks.values() if sid is None or t.session_id in (None, sid)]
        return [{k: v for k, v in self.describe(t).items() if k not in ("valid", "result")}
                for t in sorted(mine, key=lambda t: t.created_at)]

    def running(self) -> int:
        return sum(1 for t in self._tasks.values() if t.status in ("pending", "running"))

    def cancel_all(self) -> None:
        for task in list(self._tasks.values()):
            self._drop(task)
