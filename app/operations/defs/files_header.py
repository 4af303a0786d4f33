"""FITS header cards of a file inside the data roots."""

from __future__ import annotations

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._files import FILE_CAPABILITY, FilePathRequest
from app.operations.models import Envelope
from app.services import files


class HeaderResponse(Envelope):
    """The primary HDU's header cards."""

    path: str = Field(description="Absolute path of the file.")
    cards: list[str] = Field(description="One string per 80-character card of the primary HDU.")


class FilesHeader(Operation):
    """FITS header cards of the primary HDU as strings."""

    name = "files_header"
    tag = "files"
    capability = FILE_CAPABILITY
    cached = False
    Request = FilePathRequest
    Response = HeaderResponse
    routes = (Route("POST", "/v1/files/header", "FITS header of a file"),)

    def plan(self, call: Call, body: FilePathRequest) -> Plan:
        roots = call.runtime.roots
        return Plan([], {}, job=lambda ctx: files.header_cards(roots, body.path))
