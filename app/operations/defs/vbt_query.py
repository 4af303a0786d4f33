"""One page of a filtered, sorted VBT as base64 float64 column vectors."""

from __future__ import annotations

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._catalogue import TABLE_CAPABILITY, PageInfo, QueryPage, QueryRequest
from app.operations.models import COMPRESSION_FIELD, example
from app.services import vbt
from app.services.catalogue import to_filters


class VbtQueryRequest(QueryRequest):
    """The catalogue query on a VBT (compression applies to the column vectors)."""

    model_config = example(dataset_id="ds_0123456789ab", limit=1000, offset=0,
                           filters=[{"field": "x", "op": ">", "value": 0}], fields=["x", "y", "z"])
    compression: str | None = COMPRESSION_FIELD


class VbtColumns(PageInfo):
    """Columns as base64 of little-endian float64 vectors (NaN where a value is missing)."""

    num_rows: int = Field(description="Rows in this answer (same as `returned_rows`).")
    scalar_type: str = Field(description="Always `float64`.")
    byte_order: str = Field(description="Always `little`.")
    compression: str = Field(description="`none` or `qt-zlib` (applied to each column).")
    columns: dict[str, str] = Field(description="Field → base64 float64 vector of `num_rows` values.")


class VbtQueryResponse(VbtColumns, QueryPage):
    """One page of columns and the filtered `total_rows`."""


class VbtQuery(Operation):
    """The catalogue query on a VBT; `columns` maps field → base64 little-endian float64."""

    name = "vbt_query"
    tag = "vbt"
    capability = TABLE_CAPABILITY
    cached = False
    Request = VbtQueryRequest
    Response = VbtQueryResponse
    routes = (Route("POST", "/v1/vbt/query", "Query a VisIVO Binary Table"),)

    def plan(self, call: Call, body: VbtQueryRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        filters = to_filters(body.filters)
        return Plan([dataset], {}, job=lambda ctx: vbt.query_vbt(
            dataset, filters=filters, sort_field=body.sort_field, sort_direction=body.sort_direction,
            limit=body.limit, offset=body.offset, fields=body.fields, compression=body.compression))
