"""What the cube-view operations (preview, slice, sub-volume) share: their capability row."""

from __future__ import annotations

from app.compute.capabilities import Capability

#: Views are strided/box reads of the memmap: I/O-bound, so they run on the interactive CPU pool.
VIEW_CAPABILITY = Capability(
    kernels=(), tier="interactive", gpu_kernel=False,
    no_gpu_reason="an I/O-bound read of the memmap (byte order and BLANK applied); a device copy would "
                  "only add a transfer",
)
