"""What an operation module declares, and what its planning step returns.

An *operation* is one thing the server computes (a moment map, a PV diagram, an imstat ...).
Its module in :mod:`app.operations.defs` defines one subclass of :class:`Operation` with

- ``name`` — the key of its capability row and of its task route ``POST /v1/tasks/{name}``;
- ``capability`` — its row of the capability table (kernel modules, GPU or the reason why not,
  tier, chunking);
- ``Request`` / ``Response`` — pydantic models (fields with descriptions and units, examples);
- ``routes`` — the HTTP routes that run it synchronously (paths of the API reference);
- ``cached`` — whether answers go through the product cache;
- ``plan(call, body)`` — domain validation and planning: returns a :class:`Plan` holding the
  datasets read, the canonical parameters (the cache key) and the job to run.

The executor (:mod:`app.operations.executor`) runs every plan the same way; the HTTP layer
(:mod:`app.operations.http`) builds the routes from the registry. Nothing else needs to know
an operation exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from fastapi import Response
from pydantic import BaseModel

from app.compute.capabilities import Capability
from app.compute.dispatch import JobContext
from app.errors import NotFound
from app.services.sessions import Dataset

if TYPE_CHECKING:
    from app.runtime import Runtime

Job = Callable[[JobContext], dict[str, Any]]
Method = Literal["GET", "POST", "DELETE"]


@dataclass(frozen=True)
class Route:
    """One HTTP route of an operation.

    Attributes
    ----------
    method, path
        HTTP method and path (FastAPI syntax; path parameters reach ``plan`` via ``call.path``).
    summary
        One line for the API docs.
    render
        Turns the JSON answer into another response (binary frames); ``None`` answers JSON.
    media_type
        Media type of a rendered answer (documented in the OpenAPI schema).
    """

    method: Method
    path: str
    summary: str
    render: Callable[[dict[str, Any]], Response] | None = None
    media_type: str = "application/json"


@dataclass
class Plan:
    """A validated request, ready to run.

    Attributes
    ----------
    datasets
        Datasets the job reads (their version keys enter the cache key).
    params
        Canonical parameters (JSON-able): with ``key_extra`` and the datasets, the cache key.
    job
        ``job(ctx) -> dict`` run on the operation's tier; its dict is the answer's payload.
    parts, combine
        Instead of ``job``: independent heavy parts run concurrently, merged by ``combine`` (on a
        worker thread, off the event loop).
    finish
        Runs in the event loop after the job (e.g. registering a new dataset); returns the payload.
    cache_check
        Whether a cached payload is still usable (e.g. the dataset it registered is still open).
    """

    datasets: list[Dataset]
    params: dict[str, Any]
    job: Job | None = None
    parts: list[Job] = field(default_factory=list)
    combine: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    cache_check: Callable[[dict[str, Any]], bool] | None = None
    key_extra: list[str] = field(default_factory=list)


@dataclass
class Call:
    """What planning may use of one HTTP call: the runtime, the session header, path parameters."""

    runtime: Runtime
    session_id: str | None
    path: dict[str, str] = field(default_factory=dict)

    def dataset(self, dataset_id: str) -> Dataset:
        """The dataset, if the caller may address it (404 otherwise)."""
        return self.runtime.sessions.dataset(dataset_id, self.session_id)

    def resident(self, dataset: Dataset) -> Callable[[JobContext], Callable[[], Any] | None]:
        """For a job context: a getter of the dataset's device-resident cube (``None`` on the CPU)."""
        return self.runtime.resident_cube(dataset)

    def still_open(self, dataset_id: str, session_id: str) -> bool:
        """Whether ``dataset_id`` is still open in ``session_id`` (for cached answers naming it)."""
        try:
            self.runtime.sessions.dataset(dataset_id, session_id)
        except NotFound:
            return False
        return True


class Operation:
    """Base class of every operation (see the module docstring)."""

    name: ClassVar[str]
    capability: ClassVar[Capability]
    Request: ClassVar[type[BaseModel]]
    Response: ClassVar[type[BaseModel]]
    routes: ClassVar[tuple[Route, ...]] = ()
    cached: ClassVar[bool] = True
    #: Offered as ``POST /v1/tasks/{name}``; default: heavy operations.
    task: ClassVar[bool | None] = None
    #: API docs group.
    tag: ClassVar[str] = "operations"

    @classmethod
    def offers_task(cls) -> bool:
        return cls.capability.tier == "heavy" if cls.task is None else cls.task

    def plan(self, call: Call, body: Any) -> Plan:  # pragma: no cover - every operation overrides it
        raise NotImplementedError
