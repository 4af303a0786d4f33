"""What the two cosmology operations share: the capability row and the request fields."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.compute.capabilities import Capability
from app.services.cosmology import MODELS

#: Distances come from astropy (one redshift) or a cached cubic-spline grid (a batch).
COSMOLOGY_CAPABILITY = Capability(
    kernels=(), tier="interactive", gpu_kernel=False,
    no_gpu_reason="astropy integrals for one redshift, a cached spline grid for a batch: microseconds per "
                  "value on the CPU, less than a device transfer would cost",
)


def model_field() -> Any:
    """The `model` request field."""
    return Field(None, description=f"Cosmology: {', '.join(MODELS)} (case-insensitive; default Planck18).")
