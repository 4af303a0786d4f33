"""Products that become datasets: register a written cube in the caller's session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.operations.base import Call
from app.services.datasets import open_dataset


def register_output(call: Call, session_id: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A plan ``finish`` that opens the job's ``output_path`` as a new dataset of ``session_id``."""

    def finish(result: dict[str, Any]) -> dict[str, Any]:
        runtime = call.runtime
        opened = open_dataset(runtime.sessions, runtime.roots, result["output_path"], session_id)
        return {**result, "new_dataset_id": opened.dataset_id, "session_id": session_id}

    return finish


def output_still_open(call: Call, session_id: str) -> Callable[[dict[str, Any]], bool]:
    """A plan ``cache_check``: a cached answer is usable while the dataset it registered is open."""
    return lambda body: call.still_open(body.get("new_dataset_id", ""), session_id)
