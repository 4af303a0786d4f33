"""Target name → ICRS coordinates (coordinates, OpenNGC, designation, then CDS Sesame)."""

from __future__ import annotations

from pydantic import Field

from app.compute.capabilities import Capability
from app.operations.base import Call, Operation, Plan, Route
from app.operations.models import ApiRequest, Envelope, example
from app.services.resolve import resolve_target, sesame_urls_from


class ResolveRequest(ApiRequest):
    """A target name, or coordinates typed as a name."""

    model_config = example(name="M87")
    name: str = Field(description="Object name (`M87`, `NGC 4486`, `2MASX J12304942+1223279`) or coordinates "
                                  "(`187.7059 12.3911`, `12:30:49.42 +12:23:28.0`).")


class ResolveResponse(Envelope):
    """ICRS position of the target and the resolver that answered."""

    query: str = Field(description="The name as looked up (whitespace collapsed).")
    ra_deg: float = Field(description="Right ascension, ICRS (degrees, 0–360).")
    dec_deg: float = Field(description="Declination, ICRS (degrees, −90–90).")
    resolved_name: str | None = Field(description="Canonical name from the resolver (the query for coordinates).")
    resolver: str = Field(description="`coordinates`, `openngc`, `designation` or `sesame`.")
    approximate: bool = Field(description="The position comes from a truncated designation (arcminute-level).")
    object_type: str | None = Field(None, description="OpenNGC: object type (`Galaxy`, `Open Cluster` …).")
    aliases: list[str] | None = Field(None, description="OpenNGC: other identifiers and common names.")


class ResolveTarget(Operation):
    """`ra_deg`, `dec_deg` (ICRS), `resolved_name` and the `resolver` that answered."""

    name = "resolve_target"
    tag = "resolve"
    capability = Capability(
        kernels=(), tier="interactive", gpu_kernel=False,
        no_gpu_reason="a name lookup (string parsing, the OpenNGC SQLite file, an HTTP query): nothing to compute",
    )
    cached = False
    Request = ResolveRequest
    Response = ResolveResponse
    routes = (Route("POST", "/v1/resolve/target", "Resolve a target name"),)

    def plan(self, call: Call, body: ResolveRequest) -> Plan:
        urls = sesame_urls_from(call.runtime.settings.sesame_url)
        return Plan([], {}, job=lambda ctx: resolve_target(body.name, sesame_urls=urls))
