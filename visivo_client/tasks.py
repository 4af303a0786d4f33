"""Heavy work as server tasks: create, poll with a progress bar, cancel on Ctrl-C."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from tqdm import tqdm

from visivo_client.errors import VisivoError
from visivo_client.transport import Transport

#: Terminal task states, in both spellings the server may use (reference and legacy).
DONE = ("done", "completed")
FAILED = ("error", "failed")

#: Polling: start fast (short jobs), back off to this period.
FIRST_POLL_S = 0.05
MAX_POLL_S = 0.5


def run_task(transport: Transport, operation: str, body: dict[str, Any], *, progress: bool = True,
             description: str | None = None) -> dict[str, Any]:
    """Run ``POST /v1/tasks/{operation}`` to completion and return the task's result.

    Parameters
    ----------
    transport : Transport
        Connection to the server.
    operation : str
        Task route: ``moment``, ``pv``, ``linewidth``, ``baseline``, ``stack`` or ``isosurface``.
    body : dict
        The request body (same as the synchronous route's).
    progress : bool
        Show a tqdm bar on stderr (fraction reported by the server, 0–100 %).
    description : str, optional
        Label of the bar (default: the operation).

    Returns
    -------
    dict
        The ``result`` of the finished task (the synchronous route's answer).

    Raises
    ------
    VisivoError
        The server refused the request or the task ended in error.
    KeyboardInterrupt
        After cancelling the task on the server (``DELETE /v1/tasks/{id}``).
    """
    created = transport.post(f"/v1/tasks/{operation}", body)
    task_id = created["task_id"]
    bar = tqdm(total=100, desc=description or operation, unit="%", file=sys.stderr, disable=not progress,
               leave=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
    wait = FIRST_POLL_S
    try:
        while True:
            state = transport.get(f"/v1/tasks/{task_id}")
            done = round(100 * float(state.get("progress") or 0.0))
            if done > bar.n:
                bar.update(done - bar.n)
            status = state.get("status")
            if status in DONE:
                if bar.n < 100:
                    bar.update(100 - bar.n)
                result = state.get("result")
                if not isinstance(result, dict):
                    raise VisivoError(f"Task {task_id} finished without a result.", 200, state)
                return result
            if status in FAILED:
                raise VisivoError(state.get("error") or f"Task {task_id} failed.", 200, state)
            time.sleep(wait)
            wait = min(MAX_POLL_S, wait * 1.5)
    except KeyboardInterrupt:
        cancel_task(transport, task_id)
        raise
    finally:
        bar.close()


def cancel_task(transport: Transport, task_id: str) -> bool:
    """Cancel and remove a task on the server; ``False`` when it was already gone."""
    with contextlib.suppress(VisivoError):
        transport.delete(f"/v1/tasks/{task_id}")
        return True
    return False
