"""Async tasks: poll and cancel (tasks are created by ``POST /v1/tasks/{operation}``, see the registry)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from app.deps import RuntimeDep, session_id_of
from app.operations.http import STANDARD_ERRORS, respond
from app.operations.models import Envelope, TaskStatus

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], responses=STANDARD_ERRORS)


class TaskDeleted(Envelope):
    """A task was cancelled (if running) and removed."""

    task_id: str = Field(description="The task.")
    deleted: bool = Field(True, description="Always true.")


class TaskList(Envelope):
    """Every live task, oldest first, without results."""

    tasks: list[dict[str, Any]] = Field(description="`task_id`, `operation`, `status`, `progress`, `age_seconds`, …")


@router.get("", response_model=TaskList)
async def task_list(request: Request, runtime: RuntimeDep):  # noqa: ANN201
    """The caller's live tasks (status, progress, no result; all of them without a session header)."""
    return respond(TaskList, {"valid": True, "error": "", "tasks": runtime.tasks.listing(session_id_of(request))})


@router.get("/{task_id}", response_model=TaskStatus)
async def task_status(task_id: str, request: Request, runtime: RuntimeDep):  # noqa: ANN201
    """Status, progress (0–1) and, when done, the full result (404 for another session's task)."""
    return respond(TaskStatus, runtime.tasks.describe(runtime.tasks.get(task_id, session_id_of(request))))


@router.delete("/{task_id}", response_model=TaskDeleted)
async def task_delete(task_id: str, request: Request, runtime: RuntimeDep):  # noqa: ANN201
    """Cancel (the job stops at its next chunk and frees its slot) and remove (404 for another session's)."""
    record = await runtime.tasks.delete(task_id, session_id_of(request))
    return respond(TaskDeleted, {"valid": True, "error": "", "task_id": record.task_id, "deleted": True})
