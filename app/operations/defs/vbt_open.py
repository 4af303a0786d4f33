"""Open a VisIVO Binary Table (`X.bin` + `X.bin.head`), or one field of a volume VBT as a cube."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.compute.dispatch import JobContext
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._catalogue import TABLE_CAPABILITY, OpenedTable
from app.operations.models import ApiRequest, example
from app.services import vbt
from app.services.datasets import open_answer


class OpenVbtRequest(ApiRequest):
    """A VBT by either file of its pair; `as_cube` opens one field of a volume as a cube dataset."""

    model_config = example(path="galaxies.bin")
    path: str = Field(description="The `.bin` or the `.bin.head` (inside the data roots).")
    as_cube: bool = Field(False, description="Open a volume VBT's `field` as a cube (cube routes then apply).")
    field: str | None = Field(None, description="With `as_cube`: the field to present (default the first).")


class VbtOpened(OpenedTable):
    """The opened VBT: its header (and, with `as_cube`, the cube metadata of `/v1/datasets/open`)."""

    vbt_kind: str = Field(description="`point` (a table) or `volume` (a grid).")
    fields: list[str] = Field(description="Field names in file order.")
    scalar_type: str = Field(description="Element type in the binary file (`float`, `double` …).")
    endian: str = Field(description="Byte order of the binary file (`little` or `big`).")
    header_path: str = Field(description="Resolved path of the `.bin.head`.")
    binary_path: str = Field(description="Resolved path of the `.bin`.")
    file_size_bytes: int = Field(description="Size of the `.bin` (bytes).")
    dimensions: list[int] | None = Field(None, description="Volume: grid cells along x, y, z.")
    spacing: list[float] | None = Field(None, description="Volume: cell size along x, y, z (file units).")
    width: int | None = Field(None, description="Volume: cells along x.")
    height: int | None = Field(None, description="Volume: cells along y.")
    depth: int | None = Field(None, description="Volume: cells along z.")
    field: str | None = Field(None, description="With `as_cube`: the field presented as the cube.")


class VbtOpen(Operation):
    """Open `X.bin` / `X.bin.head`; `as_cube` opens one field of a volume as a cube dataset."""

    name = "vbt_open"
    tag = "vbt"
    capability = TABLE_CAPABILITY
    cached = False
    Request = OpenVbtRequest
    Response = VbtOpened
    routes = (Route("POST", "/v1/vbt/open", "Open a VisIVO Binary Table"),)

    def plan(self, call: Call, body: OpenVbtRequest) -> Plan:
        runtime = call.runtime

        def job(_: JobContext) -> dict[str, Any]:
            return open_answer(vbt.open_vbt(runtime.sessions, runtime.roots, path=body.path, session_id=call.session_id,
                                       cube=body.as_cube, field_name=body.field))

        return Plan([], {}, job=job)
