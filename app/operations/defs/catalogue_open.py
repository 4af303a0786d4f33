"""Open a catalogue (CSV, VOTable, FITS table, IPAC, ASCII; several files concatenated)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.compute.dispatch import JobContext
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._catalogue import TABLE_CAPABILITY, OpenedTable
from app.operations.models import ApiRequest, example
from app.services import catalogue
from app.services.datasets import open_answer


class OpenCatalogueRequest(ApiRequest):
    """One catalogue file (`path`), or several with identical columns (`paths`), inside the data roots."""

    model_config = example(path="catalogue_sky.csv", format="csv")
    path: str | None = Field(None, description="Catalogue file (relative to a data root, or absolute inside one).")
    paths: list[str] | None = Field(None, description="Several files with the same columns, concatenated in "
                                                      "order (takes precedence over `path`).")
    format: str | None = Field(None, description="`csv`, `votable`, `fits`, `ipac` or `ascii` (aliases `tsv`, "
                                                 "`vot`, `xml`, `tbl`, `txt` …); default: from the suffix.")


class CatalogueField(BaseModel):
    """One field (column) of a catalogue."""

    name: str = Field(description="Column name as stored.")
    type: str = Field(description="`int`, `float`, `string`, `bool`, `temporal` or `other`.")
    sql_type: str = Field(description="DuckDB type (`DOUBLE`, `VARCHAR` …).")
    numeric: bool = Field(description="The field is `int` or `float`.")
    unit: str = Field(description="Physical unit declared by the file (VOTable, FITS, IPAC), else empty.")


class CoordinateFields(BaseModel):
    """The position fields found by name (case-insensitive, punctuation ignored)."""

    system: str = Field(description="`sky` (RA/Dec, degrees), `cartesian` (x/y/z) or `none`.")
    fields: list[str] = Field(description="The position fields, in axis order.")
    ra: str | None = Field(None, description="RA field (sky).")
    dec: str | None = Field(None, description="Dec field (sky).")
    x: str | None = Field(None, description="x field (cartesian).")
    y: str | None = Field(None, description="y field (cartesian).")
    z: str | None = Field(None, description="z field (cartesian).")


class CatalogueOpened(OpenedTable):
    """The opened catalogue: files, rows, typed fields, coordinate and redshift fields."""

    format: str = Field(description="Format read: `csv`, `votable`, `fits`, `ipac` or `ascii`.")
    paths: list[str] = Field(description="Resolved paths of every file read.")
    num_files: int = Field(description="Files concatenated.")
    total_rows: int = Field(description="Rows in the table (same as `num_rows`).")
    fields: list[CatalogueField] = Field(description="Every field with its type and unit.")
    field_types: dict[str, str] = Field(description="Field name → type (`int`, `float`, `string` …).")
    coordinate_fields: CoordinateFields = Field(description="Sky or cartesian position fields.")
    redshift_field: str | None = Field(None, description="Redshift field (`z`, `redshift`, `zspec` …), if any.")
    notes: list[str] = Field(description="What the reader had to assume or repair, for a person to read.")


class CatalogueOpen(Operation):
    """Open a catalogue in the caller's session (a new session when the request names none)."""

    name = "catalogue_open"
    tag = "catalogue"
    capability = TABLE_CAPABILITY
    cached = False
    Request = OpenCatalogueRequest
    Response = CatalogueOpened
    routes = (Route("POST", "/v1/catalogue/open", "Open a catalogue"),)

    def plan(self, call: Call, body: OpenCatalogueRequest) -> Plan:
        runtime = call.runtime

        def job(_: JobContext) -> dict[str, Any]:
            return open_answer(catalogue.open_catalogue(runtime.sessions, runtime.roots, path=body.path,
                                                   paths=body.paths, fmt=body.format, session_id=call.session_id))

        return Plan([], {}, job=job)
