"""Comoving, luminosity and angular-diameter distance of one redshift (astropy)."""
# ruff: noqa: N815 - the wire names carry their unit (`distance_Mpc`), as the API reference spells them

from __future__ import annotations

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._cosmology import COSMOLOGY_CAPABILITY, model_field
from app.operations.models import ApiRequest, Envelope, example
from app.services import cosmology


class DistanceRequest(ApiRequest):
    """One redshift (finite, ≥ 0)."""

    model_config = example(redshift=0.5, model="Planck18")
    redshift: float | None = Field(None, description="Redshift z (dimensionless, finite, ≥ 0).")
    model: str | None = model_field()
    kind: str | None = Field(None, description="`comoving` (default), `luminosity` or `angular_diameter` "
                                               "(aliases `dc`, `dl`, `da`): echoed as `kind`.")


class DistanceResponse(Envelope):
    """All three distances of the redshift, in Mpc."""

    model: str = Field(description="The cosmology used.")
    redshift: float = Field(description="The redshift.")
    kind: str = Field(description="The requested kind (normalised).")
    distance_Mpc: float = Field(description="Comoving distance D_C (Mpc).")
    comoving_distance_Mpc: float = Field(description="Comoving distance D_C (Mpc).")
    luminosity_distance_Mpc: float = Field(description="Luminosity distance D_L = (1 + z)·D_M (Mpc).")
    angular_diameter_distance_Mpc: float = Field(description="Angular-diameter distance D_A = D_M / (1 + z) (Mpc).")
    unit: str = Field(description="Always `Mpc`.")


class CosmologyDistance(Operation):
    """Comoving (`distance_Mpc`), luminosity and angular-diameter distance of one redshift."""

    name = "cosmology_distance"
    tag = "cosmology"
    capability = COSMOLOGY_CAPABILITY
    cached = False
    Request = DistanceRequest
    Response = DistanceResponse
    routes = (Route("POST", "/v1/cosmology/distance", "Distances of one redshift"),)

    def plan(self, call: Call, body: DistanceRequest) -> Plan:
        kind = cosmology.kind_of(body.kind)
        return Plan([], {}, job=lambda ctx: {**cosmology.single(body.redshift, model_name=body.model), "kind": kind})
