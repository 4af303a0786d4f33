"""GPU parity for the spectral kernels: line width, baseline, stacking, isosurface.

Every public function of ``gpu_kernels.{linewidth,baseline,stacking,isosurface}`` is compared
with its ``cpu_fallback`` twin on the same input: same dtype and shape, NaN in the same places,
values within the tolerance noted per test. CuPy is imported inside the tests (this module must
import on a machine without CUDA; there the conftest runs ``gpu`` tests on the CPU emulator).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback import baseline as cpu_bl
from cpu_fallback import isosurface as cpu_iso
from cpu_fallback import linewidth as cpu_lw
from cpu_fallback import stacking as cpu_st

pytestmark = pytest.mark.gpu


def _on_gpu(x):
    import cupy as cp

    return cp.asarray(x)


def _host(x) -> np.ndarray:
    import cupy as cp

    return np.asarray(cp.asnumpy(x))


def _same(gpu, cpu, *, rtol: float, atol: float = 0.0) -> None:
    """dtype, shape and NaN positions equal; finite values within rtol/atol."""
    g, c = _host(gpu), np.asarray(cpu)
    assert g.dtype == c.dtype and g.shape == c.shape
    np.testing.assert_array_equal(np.isnan(g), np.isnan(c))
    np.testing.assert_allclose(g, c, rtol=rtol, atol=atol, equal_nan=True)


def _line_cube(dtype=np.float32, seed: int = 0):
    rng = np.random.default_rng(seed)
    nz, ny, nx = 96, 23, 37
    v = np.linspace(-300.0, 300.0, nz)
    sig = rng.uniform(8.0, 50.0, (ny, nx))
    mu = rng.uniform(-150.0, 150.0, (ny, nx))
    amp = rng.uniform(0.0, 2.0, (ny, nx))  # includes pixels under the SNR cut
    cube = amp * np.exp(-0.5 * ((v[:, None, None] - mu) / sig) ** 2) + rng.normal(0, 0.05, (nz, ny, nx))
    cube[rng.random(cube.shape) < 0.02] = np.nan
    cube[:, 0, :3] = np.nan
    return cube.astype(dtype), v, np.full(nz, v[1] - v[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [{"snr_cut": 3.0}, {"snr_cut": 0.0}, {"snr_cut": 5.0, "threshold": 0.02}])
def test_gaussian_linewidth_parity(dtype, kw) -> None:
    from gpu_kernels import linewidth as gpu

    cube, v, dv = _line_cube(dtype)
    fc, ec = cpu_lw.gaussian_linewidth(cube, v, dv, **kw)
    fg, eg = gpu.gaussian_linewidth(_on_gpu(cube), _on_gpu(v), _on_gpu(dv), **kw)
    # same start, windows, sums (in channel order) and LM steps in float64, no FMA: only exp rounds differently
    _same(fg, fc, rtol=1e-5)
    _same(eg, ec, rtol=1e-6)
    assert np.isfinite(fc).sum() > 0.5 * fc.size


def _hard_line_cubes():
    """Cubes that exercise the fit's rules: descending and shuffled axes, blanks and +-inf, lines
    clipped by the band edge, a start far too narrow (re-windowing), low SNR, a threshold."""
    rng = np.random.default_rng(3)
    cube, v, dv = _line_cube(np.float32, seed=1)
    cube[rng.random(cube.shape) < 0.01] = np.inf
    yield cube[::-1].copy(), v[::-1].copy(), dv, {"snr_cut": 3.0}
    perm = rng.permutation(v.size)
    yield cube[perm], v[perm], dv[perm] * (1 + 0.2 * rng.random(v.size)), {"snr_cut": 0.0}
    x = np.arange(200.0)
    sig = np.array([[12.0, 20.0, 30.0], [3.0, 8.0, 60.0]])
    mu = np.array([[100.0, 100.0, 100.0], [2.0, 197.0, 190.0]])
    edge = np.exp(-0.5 * ((x[:, None, None] - mu) / sig) ** 2) + 0.01 * np.sin(x)[:, None, None]
    edge[97:99, 0] = edge[101:103, 0] = 0.3
    edge[99:101, 0] = 1.05
    yield edge.astype(np.float32), x, np.ones(x.size), {"snr_cut": 0.0}
    low = np.exp(-0.5 * ((x[:, None, None] - rng.uniform(20, 180, (6, 9))) / rng.uniform(1, 40, (6, 9))) ** 2)
    low = (low + rng.normal(0, 0.2, low.shape)).astype(np.float32)
    yield low, x, np.ones(x.size), {"snr_cut": 2.0}
    yield low, x, np.ones(x.size), {"snr_cut": 0.0, "threshold": 0.1, "max_iter": 5}


def test_gaussian_linewidth_parity_hard_cases() -> None:
    from gpu_kernels import linewidth as gpu

    for cube, v, dv, kw in _hard_line_cubes():
        fc, ec = cpu_lw.gaussian_linewidth(cube, v, dv, **kw)
        fg, eg = gpu.gaussian_linewidth(_on_gpu(cube), _on_gpu(v), _on_gpu(dv), **kw)
        _same(fg, fc, rtol=1e-5)
        _same(eg, ec, rtol=1e-6)


def test_equivalent_width_parity() -> None:
    from gpu_kernels import linewidth as gpu

    cube, _, dv = _line_cube()
    for kw in ({}, {"snr_cut": 3.0}, {"threshold": 0.1}):
        ref = cpu_lw.equivalent_width(cube, dv, **kw)
        _same(gpu.equivalent_width(_on_gpu(cube), _on_gpu(dv), **kw), ref, rtol=1e-6)


def _baseline_cube():
    rng = np.random.default_rng(1)
    nz, ny, nx = 80, 21, 19
    t = np.linspace(-1, 1, nz)[:, None, None]
    cube = 2.0 + rng.normal(0, 0.5, (ny, nx)) * t + rng.normal(0, 0.3, (ny, nx)) * t**2
    cube = cube + rng.normal(0, 0.05, (nz, ny, nx))
    cube[rng.random(cube.shape) < 0.03] = np.nan
    cube[:, 2, 2] = np.nan
    return cube.astype(np.float32), np.r_[0:25, 55:80]


@pytest.mark.parametrize("kw", [{"order": 0}, {"order": 1}, {"order": 3}, {"method": "median"}])
def test_baseline_parity(kw) -> None:
    from gpu_kernels import baseline as gpu

    cube, lf = _baseline_cube()
    atol = 4 * np.finfo(np.float32).eps * float(np.nanmax(np.abs(cube)))  # float32 rounding of the data
    rc, pc = cpu_bl.subtract_baseline(cube, lf, **kw)
    rg, pg = gpu.subtract_baseline(_on_gpu(cube), _on_gpu(lf), **kw)
    _same(rg, rc, rtol=1e-6, atol=atol)
    _same(pg, pc, rtol=1e-10)
    _same(gpu.fit_baseline(_on_gpu(cube), lf, **kw), cpu_bl.fit_baseline(cube, lf, **kw), rtol=1e-9, atol=1e-12)
    comb_g, comb_c = gpu.baseline_rms_combine(pg, pg), cpu_bl.baseline_rms_combine(pc, pc)
    _same(comb_g, comb_c, rtol=1e-10)
    _same(gpu.baseline_rms_finalize(comb_g), cpu_bl.baseline_rms_finalize(comb_c), rtol=1e-10)


def _stack_inputs():
    rng = np.random.default_rng(2)
    cubes = [rng.normal(k, 1.0 + k, (30, 14, 11)).astype(np.float32) for k in range(4)]
    cubes[1][rng.random(cubes[1].shape) < 0.2] = np.nan
    cubes[2][5] = np.nan
    return cubes


def test_stacking_parity() -> None:
    from gpu_kernels import stacking as gpu

    cubes = _stack_inputs()
    specs_c, peaks_c, specs_g, peaks_g = [], [], [], []
    for cube in cubes:
        pc = cpu_st.mean_spectrum_partial(cube)
        pg = gpu.mean_spectrum_partial(_on_gpu(cube))
        _same(pg, pc, rtol=1e-12)
        half = cube.shape[1] // 2
        comb = gpu.mean_spectrum_combine(gpu.mean_spectrum_partial(_on_gpu(cube[:, :half])),
                                         gpu.mean_spectrum_partial(_on_gpu(cube[:, half:])))  # fmt: skip
        _same(comb, pc, rtol=1e-12)
        (sc, kc), (sg, kg) = cpu_st.mean_spectrum_finalize(pc), gpu.mean_spectrum_finalize(pg)
        _same(sg, sc, rtol=1e-12)
        _same(kg, kc, rtol=0)
        specs_c.append(sc)
        peaks_c.append(kc)
        specs_g.append(sg)
        peaks_g.append(kg)
    import cupy as cp

    sc, kc, sg, kg = np.stack(specs_c), np.stack(peaks_c), cp.stack(specs_g), cp.stack(peaks_g)
    for wb in ("uniform", "rms", "peak"):
        wc, wg = cpu_st.stack_weights(sc, kc, weight_by=wb), gpu.stack_weights(sg, kg, weight_by=wb)
        _same(wg, wc, rtol=1e-10)
        _same(gpu.combine_spectra(sg, method="weighted_mean", weights=wg),
              cpu_st.combine_spectra(sc, method="weighted_mean", weights=wc), rtol=1e-6)  # fmt: skip
    for method in ("mean", "median"):
        _same(gpu.combine_spectra(sg, method=method), cpu_st.combine_spectra(sc, method=method), rtol=1e-6)
    w = np.array([1.0, 0.5, 2.0, 3.0])
    for method in ("mean", "median", "weighted_mean"):
        g = gpu.stack_cubes([_on_gpu(c) for c in cubes], method=method, weights=_on_gpu(w))
        _same(g, cpu_st.stack_cubes(cubes, method=method, weights=w), rtol=1e-6)
    with pytest.raises(ValueError):
        gpu.combine_spectra(sg, method="weighted_mean", weights=_on_gpu(w[:3]))


def _sorted_rows(v: np.ndarray) -> np.ndarray:
    return v[np.lexsort(v.T[::-1])]


def _edge_uses(faces: np.ndarray) -> np.ndarray:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)[1]


def _area(verts: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (verts[faces[:, k]].astype(np.float64) for k in range(3))
    return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())


@pytest.mark.parametrize("step", [1, 2, 3])
def test_isosurface_parity(step: int) -> None:
    from scipy.ndimage import gaussian_filter

    from gpu_kernels import isosurface as gpu

    rng = np.random.default_rng(3)
    field = gaussian_filter(rng.normal(size=(40, 44, 48)), 1.5).astype(np.float32)
    field = np.pad(field, 1, constant_values=-1.0)
    field[10:14, 5:20, 8:30] = np.nan
    z, y, x = np.mgrid[:40, :40, :40].astype(np.float32)
    sphere = (14.2 - np.sqrt((x - 19.6) ** 2 + (y - 20.3) ** 2 + (z - 18.8) ** 2)).astype(np.float32)
    for vol, level in ((field, 0.0), (field, 0.04), (sphere, 0.0)):
        vc, fc = cpu_iso.isosurface_mesh(vol, level=level, step=step)
        vg, fg = gpu.isosurface_mesh(_on_gpu(vol), level=level, step=step)
        vg, fg = _host(vg), _host(fg)
        assert vg.dtype == np.float32 and fg.dtype == np.int32 and vg.shape == vc.shape
        # the same vertex on every crossing edge, computed with scikit-image's double formula
        np.testing.assert_allclose(_sorted_rows(vg), _sorted_rows(vc), rtol=0, atol=1e-5)
        assert fg.min() == 0 and fg.max() == len(vg) - 1
        # triangulations may differ in ambiguous cells: compare area, and the GPU mesh is closed
        assert _area(vg, fg) == pytest.approx(_area(vc, fc), rel=0.02)
        if step == 1:
            assert np.all(_edge_uses(fg) == 2)
    empty_v, empty_f = gpu.isosurface_mesh(_on_gpu(sphere), level=1e3, step=step)
    assert _host(empty_v).shape == (0, 3) and _host(empty_f).shape == (0, 3)
