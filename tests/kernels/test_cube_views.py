"""CPU reference tests for ``cpu_fallback.cube_views`` (finite range, strided preview)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cpu_fallback import cube_views
from kernel_common.views import finite_range


def test_finite_range_ignores_nan_and_inf() -> None:
    a = np.array([[np.nan, 3.0, -np.inf], [np.inf, -2.5, 7.25]], dtype=np.float32)
    lo, hi = cube_views.finite_range(a)
    assert (lo, hi) == (-2.5, 7.25)
    assert type(lo) is float and type(hi) is float


@pytest.mark.parametrize(
    "a",
    [
        np.full((2, 3, 4), np.nan, dtype=np.float32),
        np.array([np.inf, -np.inf, np.nan]),
        np.zeros((0, 5), dtype=np.float32),
        np.float32(np.nan),
    ],
)
def test_finite_range_without_finite_values_is_zero_zero(a: np.ndarray) -> None:
    assert cube_views.finite_range(a) == (0.0, 0.0)


def test_finite_range_scalar_and_single_value() -> None:
    assert cube_views.finite_range(np.float32(4.5)) == (4.5, 4.5)
    assert cube_views.finite_range(np.array([[-1.0]])) == (-1.0, -1.0)


def test_finite_range_chunked_equals_whole() -> None:
    rng = np.random.default_rng(1)
    cube = rng.normal(size=(9, 7, 5)).astype(np.float32)
    cube[rng.random(cube.shape) < 0.3] = np.nan
    cube[0] = np.nan  # a fully blank slab
    cube[4, 2, 1] = np.inf
    finite = cube[np.isfinite(cube)]
    expected = (float(finite.min()), float(finite.max()))
    assert cube_views.finite_range(cube) == expected
    # one plane (35 elements) per slab
    assert finite_range(cube, np, slab_elements=40) == expected


def test_finite_range_reads_a_memmap(tmp_path) -> None:
    path = tmp_path / "cube.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(4, 3, 2))
    mm[:] = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    mm[3, 2, 1] = np.nan
    mm.flush()
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=(4, 3, 2))
    assert cube_views.finite_range(ro) == (0.0, 22.0)
    del mm, ro


def test_strided_preview_shape_matches_client_contract() -> None:
    cube = np.zeros((32, 64, 64), dtype=np.float32)  # (z, y, x); REF-PY test: 64x64x32, s=2
    assert cube_views.strided_preview(cube, step=2).shape == (16, 32, 32)


@pytest.mark.parametrize("shape", [(5, 7, 9), (1, 1, 1), (6, 4, 3)])
@pytest.mark.parametrize("step", [1, 2, 3, 4, 10])
def test_strided_preview_is_plain_decimation(shape: tuple[int, int, int], step: int) -> None:
    cube = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    cube[0, 0, 0] = np.nan
    out = cube_views.strided_preview(cube, step=step)
    assert out.shape == tuple(math.ceil(n / step) for n in shape)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, cube[::step, ::step, ::step].astype(np.float32))
    assert np.isnan(out[0, 0, 0])


def test_strided_preview_returns_a_copy_not_a_view() -> None:
    cube = np.ones((2, 2, 2), dtype=np.float32)
    out = cube_views.strided_preview(cube, step=1)
    out[0, 0, 0] = 5.0
    assert cube[0, 0, 0] == 1.0


def test_strided_preview_of_memmap_is_in_memory_float32(tmp_path) -> None:
    path = tmp_path / "cube.dat"
    big_endian = np.arange(5 * 6 * 7, dtype=">f4").reshape(5, 6, 7)
    mm = np.memmap(path, dtype=">f4", mode="w+", shape=big_endian.shape)
    mm[:] = big_endian
    mm.flush()
    ro = np.memmap(path, dtype=">f4", mode="r", shape=big_endian.shape)
    out = cube_views.strided_preview(ro, step=2)
    assert type(out) is np.ndarray
    assert out.dtype == np.dtype(np.float32) and out.dtype.isnative
    np.testing.assert_array_equal(out, big_endian[::2, ::2, ::2].astype(np.float32))
    del mm, ro


@pytest.mark.parametrize("step", [0, -1, 1.5, True, None])
def test_strided_preview_rejects_bad_step(step: object) -> None:
    with pytest.raises(ValueError, match="step"):
        cube_views.strided_preview(np.zeros((2, 2, 2), dtype=np.float32), step=step)  # type: ignore[arg-type]
