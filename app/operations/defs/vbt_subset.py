"""Legacy bulk fetch: the first rows of every (or the chosen) VBT field, unfiltered."""

from __future__ import annotations

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._catalogue import TABLE_CAPABILITY
from app.operations.defs.vbt_query import VbtColumns
from app.operations.models import COMPRESSION_FIELD, ApiRequest, example
from app.services import vbt


class VbtSubsetRequest(ApiRequest):
    """The first `max_rows` rows of a VBT."""

    model_config = example(dataset_id="ds_0123456789ab", max_rows=10000, fields=["x", "y", "z"])
    dataset_id: str = Field(description="Id of an open VBT dataset (`ds_…`).")
    max_rows: int | None = Field(None, description="Rows to return (default 50 000, at most 1 000 000); ≥ 0.")
    fields: list[str] | None = Field(None, description="Fields to return, in this order; default every field.")
    compression: str | None = COMPRESSION_FIELD


class VbtSubsetResponse(VbtColumns):
    """The first rows as column vectors."""

    max_rows: int = Field(description="Effective row cap.")


class VbtSubset(Operation):
    """Legacy: the first `max_rows` rows of every field, unfiltered."""

    name = "vbt_subset"
    tag = "vbt"
    capability = TABLE_CAPABILITY
    cached = False
    Request = VbtSubsetRequest
    Response = VbtSubsetResponse
    routes = (Route("POST", "/v1/vbt/subset", "First rows of a VisIVO Binary Table"),)

    def plan(self, call: Call, body: VbtSubsetRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        return Plan([dataset], {}, job=lambda ctx: vbt.subset_vbt(
            dataset, max_rows=body.max_rows, fields=body.fields, compression=body.compression))
