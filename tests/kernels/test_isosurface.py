"""CPU tests for ``cpu_fallback.isosurface`` and for the GPU kernel's triangle table (run in NumPy)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from cpu_fallback import isosurface as iso


def _area(verts: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (verts[faces[:, k]].astype(np.float64) for k in range(3))
    return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())


def _edge_uses(faces: np.ndarray) -> np.ndarray:
    """How many triangles use each undirected mesh edge."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)[1]


def _sphere(n: int = 48, r: float = 17.3, centre=(23.6, 24.2, 22.9)) -> np.ndarray:
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float64)
    cz, cy, cx = centre
    return (r - np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)).astype(np.float32)


@pytest.mark.parametrize("step", [1, 2])
def test_sphere_area_and_watertight(step: int) -> None:
    r = 17.3
    verts, faces = iso.isosurface_mesh(_sphere(r=r), level=0.0, step=step)
    assert verts.dtype == np.float32 and faces.dtype == np.int32
    assert verts.shape[1] == 3 and faces.shape[1] == 3 and faces.min() == 0 and faces.max() == len(verts) - 1
    assert _area(verts, faces) == pytest.approx(4 * np.pi * r**2, rel=0.02)
    assert np.all(_edge_uses(faces) == 2)  # closed: every edge shared by exactly two triangles
    radius = np.linalg.norm(verts - np.array([22.9, 24.2, 23.6]), axis=1)  # verts are (x, y, z)
    assert np.abs(radius - r).max() < 0.1 * step


def test_vertices_are_xyz_and_step_keeps_full_resolution_units() -> None:
    z, y, x = np.mgrid[:20, :24, :40].astype(np.float32)
    box = ((np.abs(x - 20) < 15.5) & (np.abs(y - 12) < 5.5) & (np.abs(z - 10) < 3.5)).astype(np.float32)
    verts, _ = iso.isosurface_mesh(box, level=0.5)
    ext = verts.max(axis=0) - verts.min(axis=0)
    np.testing.assert_allclose(ext, [31.0, 11.0, 7.0])  # x longest, z shortest
    coarse, _ = iso.isosurface_mesh(box, level=0.5, step=2)
    sub, _ = iso.isosurface_mesh(box[::2, ::2, ::2], level=0.5)
    np.testing.assert_allclose(np.sort(coarse, axis=0), np.sort(sub * 2, axis=0), atol=1e-5)


def test_hand_computed_single_corner() -> None:
    vol = np.zeros((2, 2, 2), dtype=np.float32)
    vol[0, 0, 0] = 4.0  # inside corner at the origin; level 1 cuts each of its edges at t = 3/4 ... from it
    verts, faces = iso.isosurface_mesh(vol, level=1.0)
    assert faces.shape == (1, 3)
    expected = np.array([[0.75, 0, 0], [0, 0.75, 0], [0, 0, 0.75]], dtype=np.float32)
    np.testing.assert_allclose(verts[np.lexsort(verts.T)], expected[np.lexsort(expected.T)], atol=1e-7)


def test_blanks_count_as_below_the_level() -> None:
    vol = np.ones((10, 10, 10), dtype=np.float32)
    vol[4:6, 4:6, 4:6] = np.nan  # all finite values are above the level: blanks are filled with level - 1
    verts, faces = iso.isosurface_mesh(vol, level=0.5)
    assert np.isfinite(verts).all() and np.all(_edge_uses(faces) == 2)
    # each vertex sits a third of the way from a valid voxel (1) to a blank (-0.5)
    frac = np.abs(verts - np.round(verts))
    assert np.allclose(np.sort(frac, axis=1)[:, 2], 1 / 3, atol=1e-6)
    assert verts.min() >= 3 and verts.max() <= 6
    # a blob whose inside overlaps blanks closes against them
    blob = _sphere(24, 8.0, (12, 12, 12))
    blob[12:, 12:, 12:] = np.nan
    v2, f2 = iso.isosurface_mesh(blob, level=0.0)
    assert np.isfinite(v2).all() and np.all(_edge_uses(f2) == 2)


def test_empty_and_errors() -> None:
    vol = _sphere(12, 3.0, (6, 6, 6))
    for kw in ({"level": 100.0}, {"level": -100.0}, {"level": float(vol.max())}):
        verts, faces = iso.isosurface_mesh(vol, **kw)
        assert verts.shape == (0, 3) and faces.shape == (0, 3)
        assert verts.dtype == np.float32 and faces.dtype == np.int32
    assert iso.isosurface_mesh(np.full((4, 4, 4), np.nan), level=0.0)[0].shape == (0, 3)
    assert iso.isosurface_mesh(vol[:1], level=0.0)[0].shape == (0, 3)
    assert iso.isosurface_mesh(vol, level=0.0, step=20)[0].shape == (0, 3)  # one sample per axis
    for kw in ({"level": np.nan}, {"level": 0.0, "step": 0}, {"level": 0.0, "step": 1.5}):
        with pytest.raises(ValueError):
            iso.isosurface_mesh(vol, **kw)
    with pytest.raises(ValueError):
        iso.isosurface_mesh(vol[0], level=0.0)


def _table_mesh(vol: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """NumPy rendition of the GPU kernels (classify, emit edge ids, unique, place vertices)."""
    from gpu_kernels.isosurface import _EPS, _tables

    ntri, tri = _tables()
    nz, ny, nx = vol.shape
    inside = vol.astype(np.float64) - level > 0.0
    cfg = np.zeros((nz - 1, ny - 1, nx - 1), dtype=np.int64)
    for i in range(8):
        dz, dy, dx = i >> 2, (i >> 1) & 1, i & 1
        cfg |= inside[dz : nz - 1 + dz, dy : ny - 1 + dy, dx : nx - 1 + dx].astype(np.int64) << i
    cz, cy, cx = np.nonzero(ntri[cfg] > 0)
    c = cfg[cz, cy, cx]
    edges = []
    for j in range(15):
        e = tri[c, j].astype(np.int64)
        ok = e >= 0
        axis, a, b = e >> 2, e & 1, (e >> 1) & 1
        dx = np.where(axis == 0, 0, a)
        dy = np.where(axis == 0, a, np.where(axis == 1, 0, b))
        dz = np.where(axis == 2, 0, b)
        gid = 3 * (((cz + dz) * ny + cy + dy) * nx + cx + dx) + axis
        edges.append(np.where(ok, gid, -1))
    tri_ids = np.stack(edges, axis=1).reshape(-1, 3)
    tri_ids = tri_ids[tri_ids[:, 0] >= 0]
    ids, inverse = np.unique(tri_ids, return_inverse=True)
    axis, v = ids % 3, ids // 3
    p = np.stack([v % nx, (v // nx) % ny, v // (nx * ny)], axis=1).astype(np.float64)
    stride = np.array([1, nx, nx * ny])[axis]
    flat = vol.ravel().astype(np.float64)
    w0 = 1.0 / (_EPS + np.abs(flat[v] - level))
    w1 = 1.0 / (_EPS + np.abs(flat[v + stride] - level))
    p[np.arange(len(ids)), axis] += w1 / (w0 + w1)
    return p.astype(np.float32), inverse.reshape(-1, 3).astype(np.int32)


def test_gpu_table_gives_the_cpu_vertex_set_and_a_watertight_mesh() -> None:
    from scipy.ndimage import gaussian_filter

    from gpu_kernels.isosurface import _tables

    ntri, tri = _tables()
    assert ntri.max() == 5 and ntri[0] == ntri[255] == 0 and np.all((tri >= -1) & (tri < 12))
    rng = np.random.default_rng(11)
    field = gaussian_filter(rng.normal(size=(26, 30, 34)), 1.2).astype(np.float32)
    field = np.pad(field, 1, constant_values=-1.0)  # closes every surface inside the box
    for level in (0.0, 0.05, -0.05):
        vg, fg = _table_mesh(field, level)
        vc, fc = iso.isosurface_mesh(field, level=level)
        assert len(vg) == len(vc)
        np.testing.assert_array_equal(vg[np.lexsort(vg.T)], vc[np.lexsort(vc.T)])
        assert np.all(_edge_uses(fg) == 2)
        assert _area(vg, fg) == pytest.approx(_area(vc, fc), rel=0.02)


def test_gpu_twin_has_the_same_public_signature() -> None:
    from gpu_kernels import isosurface as gpu

    assert inspect.signature(gpu.isosurface_mesh) == inspect.signature(iso.isosurface_mesh)
