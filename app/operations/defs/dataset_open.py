"""Opening a FITS image or cube as a dataset of the caller's session."""

from __future__ import annotations

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._files import FILE_CAPABILITY, FilePathRequest, OpenResponse
from app.services.datasets import open_answer, open_dataset


class DatasetOpen(Operation):
    """Open a FITS image or cube (2-D, 3-D, 4-D with degenerate axes, gzip) in the caller's session.

    Without `X-Visivo-Session` a new session is created; its id is in the answer.
    """

    name = "dataset_open"
    tag = "datasets"
    capability = FILE_CAPABILITY
    cached = False
    Request = FilePathRequest
    Response = OpenResponse
    routes = (Route("POST", "/v1/datasets/open", "Open a FITS image or cube"),)

    def plan(self, call: Call, body: FilePathRequest) -> Plan:
        runtime, session_id = call.runtime, call.session_id

        def job(ctx: object) -> dict:
            return open_answer(open_dataset(runtime.sessions, runtime.roots, body.path, session_id))

        return Plan([], {}, job=job)
