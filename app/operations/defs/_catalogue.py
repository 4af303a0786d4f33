"""What the catalogue and VBT operations share: the query request, the open answer and its capability.

Tables (catalogues in DuckDB, VisIVO Binary Tables) are read, filtered and paged on the CPU:
there is no kernel to run on a GPU, so every table operation has the same capability row.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app.compute.capabilities import Capability
from app.operations.defs._files import OpenResponse
from app.operations.models import ApiRequest, Envelope, example

#: The capability row of every catalogue/VBT operation.
TABLE_CAPABILITY = Capability(
    kernels=(), tier="interactive", gpu_kernel=False,
    no_gpu_reason="file parsing and DuckDB filtering/sorting/paging: I/O- and database-bound, no array kernel",
)

class FilterItem(BaseModel):
    """One filter: `field op value`; filters are AND-combined."""

    model_config = ConfigDict(extra="allow")
    field: str = Field(description="Field (column) name, as in `field_names`.")
    op: str = Field(validation_alias=AliasChoices("op", "operator"),
                    description="`<`, `<=`, `>`, `>=`, `=`, `!=` (numbers, or text in binary collation); "
                                "`contains`, `startswith`, `endswith` (text fields). Alias `operator`.")
    value: Any = Field(None, description="The value compared with (a number, or a string converted to the "
                                         "field's type).")


class QueryRequest(ApiRequest):
    """A filtered, sorted, paged query; `/v1/vbt/query` takes the same shape."""

    model_config = example(dataset_id="ds_0123456789ab", limit=100, offset=0,
                           filters=[{"field": "flux_mjy", "op": ">", "value": "0.1"}],
                           sort_field="flux_mjy", sort_direction="desc")
    dataset_id: str = Field(description="Id of an open table dataset (`ds_…`).")
    limit: int | None = Field(None, description="Rows per page (default 50 000, at most 1 000 000: a larger "
                                                "value is capped and `limit_capped` says so); ≥ 0.")
    offset: int = Field(0, ge=0, description="Rows of the filtered, sorted table to skip (≥ 0).")
    filters: list[FilterItem] = Field(default_factory=list, description="AND-combined filters.")
    sort_field: str | None = Field(None, description="Field to sort by (default: file order).")
    sort_direction: str | None = Field(None, description="`asc` (default) or `desc`.")
    fields: list[str] | None = Field(None, description="Fields (columns) to return, in this order; "
                                                     "default every field.")


class OpenedTable(OpenResponse):
    """A table opened as a dataset of the caller's session (a new session when the request named none)."""

    num_rows: int = Field(description="Rows in the table.")
    num_fields: int = Field(description="Fields (columns) in the table.")
    field_names: list[str] = Field(description="Field names in file order.")


class PageInfo(Envelope):
    """Paging fields of a query answer."""

    total_rows: int = Field(description="Rows matching the filters (before paging).")
    returned_rows: int = Field(description="Rows in this answer.")
    limit_capped: bool = Field(description="The requested page size exceeded 1 000 000 rows and was capped.")
    field_names: list[str] = Field(description="Fields returned, in order.")


class QueryPage(PageInfo):
    """Paging fields of a filtered, sorted query answer."""

    offset: int = Field(description="Rows skipped.")
    limit: int = Field(description="Effective page size.")
    has_more: bool = Field(description="More filtered rows follow this page.")
    table_rows: int = Field(description="Rows in the whole table (unfiltered).")
