"""Distances of up to 10⁶ redshifts in input order, through the cached interpolation grid."""
# ruff: noqa: N815 - the wire names carry their unit (`distance_Mpc`), as the API reference spells them

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi.responses import Response
from pydantic import Field

from app.compute.dispatch import JobContext
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._cosmology import COSMOLOGY_CAPABILITY, model_field
from app.operations.models import ApiRequest, Envelope, example
from app.services import cosmology


class BatchRequest(ApiRequest):
    """`kind` (one name or a list) adds `<kind>_distances_Mpc`; `distances_Mpc` is always comoving."""

    model_config = example(redshifts=[0.1, 0.5, 1.0], model="Planck15", kind="luminosity")
    redshifts: list[float | None] = Field(description="Redshifts (at most 1 000 000); negative, non-finite or "
                                                      "null ones give null distances.")
    model: str | None = model_field()
    kind: str | list[str] | None = Field(None, description="`comoving` (default), `luminosity`, "
                                                           "`angular_diameter`, or a list of them.")


class BatchResponse(Envelope):
    """Distances in input order (Mpc); null where the redshift was invalid."""

    model: str = Field(description="The cosmology used.")
    count: int = Field(description="Redshifts received.")
    invalid_count: int = Field(description="Negative, non-finite or null redshifts (their distances are null).")
    distances_Mpc: list[float | None] = Field(description="Comoving distances D_C (Mpc), in input order.")
    luminosity_distances_Mpc: list[float | None] | None = Field(
        None, description="With `kind` luminosity: D_L (Mpc), in input order.")
    angular_diameter_distances_Mpc: list[float | None] | None = Field(
        None, description="With `kind` angular_diameter: D_A (Mpc), in input order.")
    kind: str | list[str] = Field(description="The requested kind(s), normalised.")
    unit: str = Field(description="Always `Mpc`.")


def _nullable(values: np.ndarray) -> list[float | None]:
    """The array as a list with ``None`` in place of non-finite values."""
    out = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        out[i] = None
    return out


def _render(body: dict[str, Any]) -> Response:
    # json.dumps is several times faster than the generic NaN-safe walk on 10⁶ values (already nulled)
    return Response(json.dumps(body, separators=(",", ":"), allow_nan=False), media_type="application/json")


class CosmologyBatch(Operation):
    """Distances in input order; negative or non-finite redshifts give `null`."""

    name = "cosmology_batch"
    tag = "cosmology"
    capability = COSMOLOGY_CAPABILITY
    cached = False
    Request = BatchRequest
    Response = BatchResponse
    routes = (Route("POST", "/v1/cosmology/distance/batch", "Distances of many redshifts", render=_render),)

    def plan(self, call: Call, body: BatchRequest) -> Plan:
        names = body.kind if isinstance(body.kind, list) else [body.kind]
        kinds = [cosmology.kind_of(k) for k in names if k] or ["comoving"]

        def job(_: JobContext) -> dict[str, Any]:
            result = cosmology.batch(body.redshifts, model_name=body.model, kinds=kinds)
            return {**{k: _nullable(v) if isinstance(v, np.ndarray) else v for k, v in result.items()},
                    "kind": kinds[0] if len(kinds) == 1 else kinds, "unit": "Mpc"}

        return Plan([], {}, job=job)
