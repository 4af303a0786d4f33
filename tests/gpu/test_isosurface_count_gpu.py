"""GPU: ``gpu_kernels.isosurface.isosurface_triangle_count`` equals the GPU mesh's triangle count.

The GPU kernel has its own (face-consistent) triangle table, so its count is checked against its own
mesh, on cubes with blanks, several steps, and with slabs of one plane of cells (chunked = whole).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("step", [1, 2, 3])
def test_gpu_count_equals_gpu_mesh(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import cupy as cp
    from scipy.ndimage import gaussian_filter

    from gpu_kernels import isosurface as gpu

    rng = np.random.default_rng(5)
    field = gaussian_filter(rng.normal(size=(30, 34, 38)), 1.2).astype(np.float32)
    field[rng.random(field.shape) < 0.05] = np.nan
    field[3, 4, 5] = np.inf
    for level in (0.0, 0.05, -0.03):
        _, faces = gpu.isosurface_mesh(cp.asarray(field), level=level, step=step)
        whole = gpu.isosurface_triangle_count(cp.asarray(field), level=level, step=step)
        assert whole == int(faces.shape[0]) > 0
        with monkeypatch.context() as m:
            m.setattr(gpu, "_COUNT_CELLS", 1)  # one plane of cells per slab
            assert gpu.isosurface_triangle_count(cp.asarray(field), level=level, step=step) == whole
