"""Tests for ``app.services.pv_path.polyline_samples`` (PV path geometry, pure NumPy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.services.pv_path import PvPath, polyline_samples

R = 1.0 / math.sqrt(2.0)


def _xy(p: PvPath) -> list[tuple[float, float]]:
    return list(zip(p.sample_x.tolist(), p.sample_y.tolist(), strict=True))


def test_horizontal_segment() -> None:
    p = polyline_samples(np.array([[10, 32], [54, 32]]))  # the REF-PY test path
    assert p.num_samples == 45 and p.vertex_count == 2
    np.testing.assert_array_equal(p.sample_x, np.arange(10, 55))
    np.testing.assert_array_equal(p.sample_y, np.full(45, 32.0))
    np.testing.assert_array_equal(p.positions_px, np.arange(45.0))
    assert p.total_length_px == 44.0
    np.testing.assert_array_equal(p.normal_x, 0.0)
    np.testing.assert_array_equal(p.normal_y, 1.0)
    for a in (p.sample_x, p.sample_y, p.normal_x, p.normal_y, p.positions_px):
        assert a.dtype == np.float64 and a.shape == (45,) and a.flags.c_contiguous


def test_vertical_segment_downwards() -> None:
    p = polyline_samples([[3, 5], [3, 2]])
    assert _xy(p) == [(3.0, 5.0), (3.0, 4.0), (3.0, 3.0), (3.0, 2.0)]
    np.testing.assert_array_equal(p.normal_x, 1.0)  # direction (0, -1) -> normal (1, 0)
    np.testing.assert_array_equal(p.normal_y, 0.0)


def test_diagonal_segment_uses_ceil_of_length() -> None:
    p = polyline_samples([[0, 0], [3, 3]])  # length 4.243 -> 5 steps of 0.849 px
    np.testing.assert_allclose(p.sample_x, [0, 0.6, 1.2, 1.8, 2.4, 3.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(p.sample_y, p.sample_x, rtol=0, atol=0)
    np.testing.assert_allclose(p.positions_px, np.arange(6) * 3 * math.sqrt(2) / 5, rtol=1e-15)
    assert p.total_length_px == pytest.approx(3 * math.sqrt(2), rel=1e-15)
    np.testing.assert_allclose(p.normal_x, -R, rtol=1e-15)
    np.testing.assert_allclose(p.normal_y, R, rtol=1e-15)
    steps = np.diff(p.positions_px)
    assert (steps <= 1.0).all()


def test_3_4_5_segment_has_exact_unit_steps() -> None:
    p = polyline_samples([[0, 0], [3, 4]])
    np.testing.assert_allclose(p.sample_x, [0, 0.6, 1.2, 1.8, 2.4, 3.0], atol=1e-15)
    np.testing.assert_allclose(p.sample_y, [0, 0.8, 1.6, 2.4, 3.2, 4.0], atol=1e-15)
    np.testing.assert_array_equal(p.positions_px, np.arange(6.0))
    np.testing.assert_allclose(np.hypot(p.normal_x, p.normal_y), 1.0, rtol=1e-15)
    np.testing.assert_allclose((p.normal_x[0], p.normal_y[0]), (-0.8, 0.6), rtol=1e-15)


def test_short_segment_gets_one_step() -> None:
    p = polyline_samples([[1.0, 1.0], [1.3, 1.4]])  # length 0.5 -> n = 1
    assert _xy(p) == [(1.0, 1.0), (1.3, 1.4)]
    np.testing.assert_allclose(p.positions_px, [0.0, 0.5])


def test_float_round_off_does_not_add_a_step() -> None:
    p = polyline_samples([[0.0, 0.0], [5.0 + 1e-12, 0.0]])
    assert p.num_samples == 6


def test_multi_segment_joint_sampled_once_with_bisector_normal() -> None:
    p = polyline_samples([[1, 1], [4, 1], [4, 4]])
    assert _xy(p) == [(1, 1), (2, 1), (3, 1), (4, 1), (4, 2), (4, 3), (4, 4)]
    np.testing.assert_array_equal(p.positions_px, np.arange(7.0))
    assert p.total_length_px == 6.0 and p.vertex_count == 3
    np.testing.assert_allclose(p.normal_x, [0, 0, 0, -R, -1, -1, -1], atol=1e-15)
    np.testing.assert_allclose(p.normal_y, [1, 1, 1, R, 0, 0, 0], atol=1e-15)


def test_path_turning_back_uses_outgoing_normal_at_the_joint() -> None:
    p = polyline_samples([[0, 0], [2, 0], [0, 0]])
    assert _xy(p) == [(0, 0), (1, 0), (2, 0), (1, 0), (0, 0)]
    np.testing.assert_array_equal(p.normal_y, [1, 1, -1, -1, -1])
    np.testing.assert_allclose(p.normal_x, 0.0, atol=0)


def test_consecutive_duplicates_dropped_but_not_repeats() -> None:
    p = polyline_samples([[0, 0], [0, 0], [2, 0], [2, 0], [2, 0], [2, 2]])
    assert p.vertex_count == 3 and p.num_samples == 5
    near = polyline_samples([[0, 0], [2, 0], [2 + 1e-12, 1e-12], [2, 2]])
    assert near.vertex_count == 3
    np.testing.assert_array_equal(near.sample_x, p.sample_x)


@pytest.mark.parametrize("verts", [[[1, 1]], [[1, 1], [1, 1]], [[2, 3], [2, 3], [2, 3]], np.zeros((0, 2))])
def test_fewer_than_two_distinct_vertices_raises(verts: object) -> None:
    with pytest.raises(ValueError, match="at least 2 distinct vertices"):
        polyline_samples(verts)  # type: ignore[arg-type]


@pytest.mark.parametrize("verts", [[1, 2, 3], [[1, 2, 3], [4, 5, 6]], [[0, 0], [np.nan, 1]]])
def test_malformed_vertices_raise(verts: object) -> None:
    with pytest.raises(ValueError, match="PV vertices"):
        polyline_samples(verts)  # type: ignore[arg-type]
