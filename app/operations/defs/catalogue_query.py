"""One page of a filtered, sorted catalogue, as JSON rows."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._catalogue import TABLE_CAPABILITY, QueryPage, QueryRequest
from app.services import catalogue


class CatalogueQueryResponse(QueryPage):
    """One page of rows (key → value maps; NaN and missing values are null)."""
    rows: list[dict[str, Any]] = Field(description="The page: one field → value map per row.")


class CatalogueQuery(Operation):
    """AND-combined filters, optional sort, one page of rows and the filtered `total_rows`."""

    name = "catalogue_query"
    tag = "catalogue"
    capability = TABLE_CAPABILITY
    cached = False
    Request = QueryRequest
    Response = CatalogueQueryResponse
    routes = (Route("POST", "/v1/catalogue/query", "Query a catalogue"),)

    def plan(self, call: Call, body: QueryRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        filters = catalogue.to_filters(body.filters)
        return Plan([dataset], {}, job=lambda ctx: catalogue.query_catalogue(
            dataset, filters=filters, sort_field=body.sort_field, sort_direction=body.sort_direction,
            limit=body.limit, offset=body.offset, fields=body.fields))
