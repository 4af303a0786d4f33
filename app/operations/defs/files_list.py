"""Directory listings inside the data roots."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._files import FILE_CAPABILITY
from app.operations.models import ApiRequest, Envelope, example
from app.services import files


class ListRequest(ApiRequest):
    """The directory to list (query parameter)."""

    model_config = example(path="")
    path: str = Field("", description="Directory inside the data roots; empty: the first root.")


class ListResponse(Envelope):
    """Entries of one directory, directories first."""

    current_path: str = Field(description="Absolute path of the directory listed.")
    roots: list[str] = Field(description="The readable roots (absolute paths).")
    entries: list[dict[str, Any]] = Field(
        description="`name`, `path`, `type` (`directory`|`file`), `size` (bytes), `modified_time` (UTC ISO), "
                    "`is_fits`.")


class FilesList(Operation):
    """Directory entries (directories first), confined to the data roots."""

    name = "files_list"
    tag = "files"
    capability = FILE_CAPABILITY
    cached = False
    Request = ListRequest
    Response = ListResponse
    routes = (Route("GET", "/v1/files/list", "List a directory"),)

    def plan(self, call: Call, body: ListRequest) -> Plan:
        roots = call.runtime.roots
        return Plan([], {}, job=lambda ctx: files.list_directory(roots, body.path))
