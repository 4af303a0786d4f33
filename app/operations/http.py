"""HTTP routes built from the registry: each operation's sync routes and its task route.

For every registered operation and each of its :class:`~app.operations.base.Route` this module
adds one FastAPI route whose body is the operation's ``Request`` model and whose documented
answer is its ``Response`` model; the route parses, plans, runs the plan through the executor
and answers. Heavy operations (and any with ``task = True``) also get ``POST /v1/tasks/{name}``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from app.operations import registry
from app.operations.base import Call, Operation, Route
from app.operations.executor import execute, start_task
from app.operations.models import ErrorBody, TaskCreated
from app.responses import SafeJSONResponse, json_safe
from app.services.sessions import SESSION_HEADER

#: Statuses every authenticated JSON route may answer besides 200.
STANDARD_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong `X-Visivo-Token`."},
    404: {"model": ErrorBody, "description": "Unknown (or another session's) dataset, session or task."},
    413: {"model": ErrorBody, "description": "Request body larger than `VISIVO_MAX_REQUEST_MB`."},
    422: {"model": ErrorBody, "description": "Request validation failed; the message names the field."},
    429: {"model": ErrorBody, "description": "Every heavy slot and the wait queue are full; retry later."},
    500: {"model": ErrorBody, "description": "Internal error (logged with the request id)."},
}
#: The 200 answer of a logical failure, documented beside the success model.
LOGICAL_FAILURE = "Success, or a logical failure: HTTP 200 with `{\"valid\": false, \"error\": …}`."


def session_of(request: Request) -> str | None:
    """The ``X-Visivo-Session`` header, if any."""
    value = request.headers.get(SESSION_HEADER)
    return value.strip() if value else None


def respond(model: type[BaseModel], body: dict[str, Any]) -> SafeJSONResponse:
    """Check ``body`` against its response model and answer it as JSON (NaN as null)."""
    safe = json_safe(body)
    model.model_validate(safe)
    return SafeJSONResponse(safe, already_safe=True)


def _endpoint(op: type[Operation], route: Route | None) -> Callable[..., Any]:
    """An endpoint for one route of ``op`` (``route=None``: its task route)."""
    path = route.path if route is not None else ""
    names = re.findall(r"{(\w+)}", path)

    async def endpoint(request: Request, **kwargs: Any) -> Response:
        runtime = request.app.state.runtime
        call = Call(runtime, session_of(request), {name: kwargs[name] for name in names})
        plan = op().plan(call, kwargs["body"])
        if route is None:
            return respond(TaskCreated, start_task(runtime, op, plan, session_id=call.session_id))
        result, _ = await execute(runtime, op, plan)
        if route.render is not None:
            return route.render(result)
        return respond(op.Response, result)

    params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=str) for n in names]
    # GET routes take the request model's fields as query parameters, the others as a JSON body.
    body_type = Annotated[op.Request, Query()] if path and route.method == "GET" else op.Request
    params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body_type))
    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = f"{op.name}_{'task' if route is None else route.method.lower()}"
    return endpoint


def _doc(op: type[Operation], route: Route | None) -> str:
    lines = [(op.__doc__ or "").strip(), "", f"Capability: tier `{op.capability.tier}`, kernels "
             f"`{', '.join(op.capability.kernels) or 'none'}`, GPU "
             f"{'yes' if op.capability.gpu_kernel else 'no — ' + op.capability.no_gpu_reason}."]
    if route is None:
        lines.append("Queues the same work as an async task; poll `GET /v1/tasks/{task_id}`.")
    return "\n".join(lines)


def _operation_id(op: type[Operation], route: Route) -> str:
    return re.sub(r"\W+", "_", f"{op.name}_{route.method}_{route.path}").strip("_")


def build_router() -> APIRouter:
    """The router of every registered operation (sync routes, then task routes)."""
    router = APIRouter()
    for op in registry.operations().values():
        for route in op.routes:
            responses = dict(STANDARD_ERRORS)
            binary = route.render is not None and route.media_type != "application/json"
            if binary:
                responses[200] = {"content": {route.media_type: {}}, "description": route.summary}
            router.add_api_route(
                route.path, _endpoint(op, route), methods=[route.method], summary=route.summary,
                description=_doc(op, route), tags=[op.tag], responses=responses,
                response_model=None if binary else op.Response,
                response_description=LOGICAL_FAILURE, operation_id=_operation_id(op, route),
            )
    for op in registry.operations().values():
        if op.offers_task():
            router.add_api_route(
                f"/v1/tasks/{op.name}", _endpoint(op, None), methods=["POST"],
                summary=f"Queue {op.name} as an async task", description=_doc(op, None), tags=["tasks"],
                responses=dict(STANDARD_ERRORS), response_model=TaskCreated,
                response_description=LOGICAL_FAILURE, operation_id=f"task_{op.name}",
            )
    return router
