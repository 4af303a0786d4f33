"""Request and answer models shared by the operations that read files in the data roots."""

from __future__ import annotations

from pydantic import Field

from app.compute.capabilities import Capability
from app.operations.models import ApiRequest, Envelope, example

#: File operations read directories and headers: nothing for a kernel to do.
FILE_CAPABILITY = Capability(
    kernels=(), tier="interactive", gpu_kernel=False,
    no_gpu_reason="file-system and header reads: no array computation",
)


class FilePathRequest(ApiRequest):
    """A file or directory inside the configured data roots (or the output directory)."""

    model_config = example(path="ngc5921_hi_cube.fits.gz")
    path: str = Field(description="Path relative to a data root, or absolute inside one.")


class OpenResponse(Envelope):
    """An open dataset: ids, geometry, units and the sanitised WCS (see the README's "Open response")."""

    dataset_id: str = Field(description="Id of the dataset (`ds_…`) for later requests.")
    session_id: str = Field(description="Session the dataset belongs to (send it as `X-Visivo-Session`).")
    path: str = Field(description="Absolute path of the file opened.")
    kind: str | None = Field(None, description="`image`, `cube`, `catalogue` or `vbt`.")
