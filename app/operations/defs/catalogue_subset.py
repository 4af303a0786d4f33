"""Legacy: the first rows of a catalogue, unfiltered."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._catalogue import TABLE_CAPABILITY, PageInfo
from app.operations.models import ApiRequest, example
from app.services import catalogue


class CatalogueSubsetRequest(ApiRequest):
    """The first `max_rows` rows of a catalogue."""

    model_config = example(dataset_id="ds_0123456789ab", max_rows=1000)
    dataset_id: str = Field(description="Id of an open catalogue dataset (`ds_…`).")
    max_rows: int | None = Field(None, description="Rows to return (default 50 000, at most 1 000 000); ≥ 0.")


class CatalogueSubsetResponse(PageInfo):
    """The first rows (key → value maps)."""

    max_rows: int = Field(description="Effective row cap.")
    rows: list[dict[str, Any]] = Field(description="One field → value map per row.")


class CatalogueSubset(Operation):
    """Legacy: the first `max_rows` rows, unfiltered."""

    name = "catalogue_subset"
    tag = "catalogue"
    capability = TABLE_CAPABILITY
    cached = False
    Request = CatalogueSubsetRequest
    Response = CatalogueSubsetResponse
    routes = (Route("POST", "/v1/catalogue/subset", "First rows of a catalogue"),)

    def plan(self, call: Call, body: CatalogueSubsetRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        return Plan([dataset], {}, job=lambda ctx: catalogue.subset_catalogue(dataset, max_rows=body.max_rows))
