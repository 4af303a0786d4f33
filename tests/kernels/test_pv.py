"""Hand-computed PV cuts for ``cpu_fallback.pv.pv_box_sample`` (with ``app.services.pv_path``)."""

from __future__ import annotations

import numpy as np
import pytest

from app.services.pv_path import polyline_samples
from cpu_fallback.pv import pv_box_sample

NZ, NY, NX = 2, 5, 6


def _cube() -> np.ndarray:
    """``v(z, y, x) = 100 z + 10 y^2 + x^2``: non-linear, so a 3-pixel mean differs from its centre."""
    z, y, x = np.meshgrid(np.arange(NZ), np.arange(NY), np.arange(NX), indexing="ij")
    return (100.0 * z + 10.0 * y**2 + x**2).astype(np.float32)


def _v(z: int, y: int, x: int) -> float:
    return 100.0 * z + 10.0 * y**2 + x**2


def _mean(z: int, pixels: list[tuple[int, int]]) -> float:
    """Mean of ``_v`` over ``(y, x)`` pixels."""
    return float(np.mean([_v(z, y, x) for y, x in pixels]))


def _cut(cube: np.ndarray, vertices: list[list[float]], width: int) -> np.ndarray:
    p = polyline_samples(np.asarray(vertices))
    return pv_box_sample(cube, p.sample_x, p.sample_y, p.normal_x, p.normal_y, width_pixels=width)


def _expected(columns: list[list[tuple[int, int]]]) -> np.ndarray:
    """``(NZ, ns)`` float32 expectation from the hand-listed ``(y, x)`` pixels of every sample."""
    return np.array([[_mean(z, px) for px in columns] for z in range(NZ)], dtype=np.float32)


def test_horizontal_width_1_and_3() -> None:
    cube = _cube()
    out1 = _cut(cube, [[1, 2], [4, 2]], 1)
    assert out1.shape == (NZ, 4) and out1.dtype == np.float32
    np.testing.assert_array_equal(out1, _expected([[(2, x)] for x in (1, 2, 3, 4)]))
    # normal (0, 1): rows 1, 2, 3 at each column
    out3 = _cut(cube, [[1, 2], [4, 2]], 3)
    np.testing.assert_array_equal(out3, _expected([[(1, x), (2, x), (3, x)] for x in (1, 2, 3, 4)]))
    assert out3[0, 0] == pytest.approx((10 + 40 + 90) / 3 + 1)


def test_vertical_width_1_and_3() -> None:
    cube = _cube()
    np.testing.assert_array_equal(_cut(cube, [[2, 0], [2, 3]], 1), _expected([[(y, 2)] for y in range(4)]))
    # normal (-1, 0): columns 3, 2, 1 at each row
    out3 = _cut(cube, [[2, 0], [2, 3]], 3)
    np.testing.assert_array_equal(out3, _expected([[(y, 3), (y, 2), (y, 1)] for y in range(4)]))


def test_diagonal_width_1_and_3() -> None:
    cube = _cube()
    # length 3*sqrt(2) = 4.24 -> 5 steps: t = 0, .6, 1.2, 1.8, 2.4, 3 -> pixels 0, 1, 1, 2, 2, 3
    out1 = _cut(cube, [[0, 0], [3, 3]], 1)
    np.testing.assert_array_equal(out1, _expected([[(p, p)] for p in (0, 1, 1, 2, 2, 3)]))
    # normal (-r, r), r = 1/sqrt(2) = 0.707: offset k=0 -> (x+r, y-r), k=2 -> (x-r, y+r)
    out3 = _cut(cube, [[0, 0], [3, 3]], 3)
    cols = [
        [(0, 0)],  # (0.71, -0.71) -> (1, -1) and (-0.71, 0.71) -> (-1, 1) are off the image
        [(0, 1), (1, 1), (1, 0)],  # (1.31, -0.11) -> x 1, y 0; (-0.11, 1.31) -> x 0, y 1
        [(0, 2), (1, 1), (2, 0)],  # (1.91, 0.49) -> x 2, y 0; (0.49, 1.91) -> x 0, y 2
        [(1, 3), (2, 2), (3, 1)],  # (2.51, 1.09) -> x 3, y 1
        [(2, 3), (2, 2), (3, 2)],  # (3.11, 1.69) -> x 3, y 2; (1.69, 3.11) -> x 2, y 3
        [(2, 4), (3, 3), (4, 2)],  # (3.71, 2.29) -> x 4, y 2
    ]
    np.testing.assert_array_equal(out3, _expected(cols))


def test_multi_segment_polyline_with_joint_bisector() -> None:
    cube = _cube()
    verts = [[1, 1], [4, 1], [4, 1], [4, 4]]  # the duplicate vertex is dropped
    out1 = _cut(cube, verts, 1)
    pts = [(1, 1), (1, 2), (1, 3), (1, 4), (2, 4), (3, 4), (4, 4)]  # (y, x); joint (1, 4) once
    np.testing.assert_array_equal(out1, _expected([[p] for p in pts]))
    out3 = _cut(cube, verts, 3)
    cols = [
        [(0, 1), (1, 1), (2, 1)],  # first segment: normal (0, 1)
        [(0, 2), (1, 2), (2, 2)],
        [(0, 3), (1, 3), (2, 3)],
        [(0, 5), (1, 4), (2, 3)],  # joint: bisector (-r, r) -> (4.71, 0.29) and (3.29, 1.71)
        [(2, 5), (2, 4), (2, 3)],  # second segment: normal (-1, 0)
        [(3, 5), (3, 4), (3, 3)],
        [(4, 5), (4, 4), (4, 3)],
    ]
    np.testing.assert_array_equal(out3, _expected(cols))


def test_nan_pixels_are_skipped_and_all_nan_gives_nan() -> None:
    cube = _cube()
    cube[0, 2, 3] = np.nan
    out = _cut(cube, [[1, 2], [4, 2]], 3)
    assert out[0, 2] == np.float32(_mean(0, [(1, 3), (3, 3)]))
    assert out[1, 2] == np.float32(_mean(1, [(1, 3), (2, 3), (3, 3)]))
    cube[0, 1:4, 3] = np.nan
    out = _cut(cube, [[1, 2], [4, 2]], 3)
    assert np.isnan(out[0, 2]) and np.isfinite(out[0, [0, 1, 3]]).all() and np.isfinite(out[1]).all()
    cube[1, 2, 1] = np.inf  # inf is blank, like NaN
    assert np.isnan(_cut(cube, [[1, 2], [4, 2]], 1)[1, 0])


def test_out_of_bounds_offsets_are_ignored() -> None:
    cube = _cube()
    out = _cut(cube, [[0, 0], [2, 0]], 3)  # row -1 is off the image: rows 0, 1 only
    np.testing.assert_array_equal(out, _expected([[(0, x), (1, x)] for x in (0, 1, 2)]))
    out5 = _cut(cube, [[0, 1], [1, 1]], 5)  # rows -1 .. 3
    np.testing.assert_array_equal(out5, _expected([[(y, x) for y in (0, 1, 2, 3)] for x in (0, 1)]))
    # a path partly outside the image: samples off it are NaN in every channel
    out_off = _cut(cube, [[4, 2], [7, 2]], 1)
    assert np.isfinite(out_off[:, :2]).all() and np.isnan(out_off[:, 2:]).all()


def test_rounding_is_half_away_from_zero() -> None:
    cube = _cube()
    sx = np.array([0.5, 1.5, 2.5, -0.5, 4.4999999])
    sy = np.full(5, 2.0)
    zeros, ones = np.zeros(5), np.ones(5)
    out = pv_box_sample(cube, sx, sy, zeros, ones, width_pixels=1)
    assert out[0, :3].tolist() == [_v(0, 2, 1), _v(0, 2, 2), _v(0, 2, 3)]
    assert np.isnan(out[0, 3])  # -0.5 -> -1, off the image
    assert out[0, 4] == _v(0, 2, 4)
    # even width at an integer sample: offsets -0.5, +0.5 -> rows 2 and 3 (never 2 and 2)
    out2 = pv_box_sample(cube, np.array([1.0]), np.array([2.0]), np.zeros(1), np.ones(1), width_pixels=2)
    assert out2[0, 0] == np.float32(_mean(0, [(2, 1), (3, 1)]))


def test_float64_accumulation_and_float32_output() -> None:
    cube = np.zeros((1, 3, 1), dtype=np.float32)
    cube[0, :, 0] = [1.0e8, 1.0, -1.0e8]
    out = pv_box_sample(cube, np.zeros(1), np.ones(1), np.zeros(1), np.ones(1), width_pixels=3)
    assert out.dtype == np.float32 and out[0, 0] == np.float32(1.0 / 3.0)


def test_client_contract_shape_and_memmap(tmp_path) -> None:
    rng = np.random.default_rng(0)
    cube = rng.normal(0, 0.1, (32, 64, 64)).astype(np.float32)
    mm = np.memmap(tmp_path / "c.dat", dtype=np.float32, mode="w+", shape=cube.shape)
    mm[:] = cube
    mm.flush()
    p = polyline_samples(np.array([[10, 32], [54, 32]]))
    args = (p.sample_x, p.sample_y, p.normal_x, p.normal_y)
    out = pv_box_sample(mm, *args, width_pixels=3)
    assert out.shape == (32, 45)
    np.testing.assert_array_equal(out, pv_box_sample(cube, *args, width_pixels=3))
    del mm


def test_empty_path_and_validation() -> None:
    cube = _cube()
    e = np.zeros(0)
    assert pv_box_sample(cube, e, e, e, e, width_pixels=1).shape == (NZ, 0)
    one = np.zeros(1)
    with pytest.raises(ValueError, match="width_pixels"):
        pv_box_sample(cube, one, one, one, one, width_pixels=0)
    with pytest.raises(ValueError, match="1-D"):
        pv_box_sample(cube, one, np.zeros(2), one, one, width_pixels=1)
    with pytest.raises(ValueError, match="cube"):
        pv_box_sample(cube[0], one, one, one, one, width_pixels=1)
