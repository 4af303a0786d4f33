"""Compiled moment kernels (numba) against the NumPy oracle, reading stored FITS data.

Tolerances (documented in cpu_fallback/compiled/moments_ref.py): the compiled kernel sums in
float64 where the oracle sums order 0 alone in float32 per chunk, so maps agree to
``|a - b| <= 2e-5 |b| + 1e-6 * scale`` (``scale``: the order's natural magnitude, e.g.
``sum |I| dv`` for order 0). Extrema, blanks (NaN positions) and chunking are exact. The CASA
kernel accumulates in the oracle's channel order: equal to float32 rounding (``rtol 1e-6``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from app.io.fits_reader import open_fits_image
from cpu_fallback.casa_moments import casa_moment_maps
from cpu_fallback.compiled import runtime
from cpu_fallback.compiled.moments_casa import SUM_MOMENTS, casa_moment_maps_raw
from cpu_fallback.compiled.moments_ref import COMPILED_ORDERS, moment_maps_raw
from cpu_fallback.moments import moment_maps

NZ, NY, NX = 48, 13, 19
REF_ORDERS = sorted(COMPILED_ORDERS)
CASA_MOMS = sorted(SUM_MOMENTS)  # the medians: tests/kernels/test_compiled_casa_medians.py


def _lines(seed: int = 0) -> np.ndarray:
    """Gaussian lines (varying centre, width, sign) plus noise, blanks and two fully blank pixels."""
    rng = np.random.default_rng(seed)
    z = np.arange(NZ)[:, None, None]
    yy, xx = np.mgrid[0:NY, 0:NX]
    centre = 10 + 1.3 * xx + 0.7 * yy
    width = 2.0 + 0.2 * yy
    cube = 3.0 * np.exp(-0.5 * ((z - centre) / width) ** 2) + rng.normal(0, 0.3, (NZ, NY, NX))
    cube[:, 2, :] *= -1.0
    cube = cube.astype(np.float32)
    cube[rng.random(cube.shape) < 0.03] = np.nan
    cube[:, 0, 0] = np.nan
    cube[:, 5, 7] = np.nan
    cube[3:9, 4, 4] = np.inf
    return cube


def _axis(equal: bool = True) -> tuple[np.ndarray, np.ndarray]:
    v = 1450.0 + 2.5 * np.arange(NZ)
    w = np.full(NZ, 2.5) if equal else np.linspace(2.0, 3.0, NZ)
    return v, w


def _decode(raw: np.ndarray, bscale: float, bzero: float, blank: int | None) -> np.ndarray:
    """Independent decode of stored data (the FITS rule, float32 arithmetic as the reader)."""
    out = raw.astype(np.float32)
    if blank is not None:
        out[raw == blank] = np.nan
    out *= np.float32(bscale)
    out += np.float32(bzero)
    return out


def _scale(order: int, cube: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray | float:
    """Natural magnitude of an order for the absolute part of the tolerance."""
    if order == 0:
        return np.nansum(np.abs(np.where(np.isfinite(cube), cube, 0.0)) * w[:, None, None], axis=0)
    if order == 1:
        return float(np.max(np.abs(v)))
    if order == 2:
        return float(np.ptp(v)) ** 2
    if order in (3, 4, 5):
        return 10.0
    return float(np.nanmax(np.abs(np.where(np.isfinite(cube), cube, np.nan))))


def _check_ref(got: dict, want: dict, cube: np.ndarray, v: np.ndarray, w: np.ndarray) -> None:
    for k, exp in want.items():
        a = got[k]
        assert a.dtype == np.float32 and a.shape == exp.shape
        np.testing.assert_array_equal(np.isnan(a), np.isnan(exp), err_msg=f"NaN positions of order {k}")
        ok = ~np.isnan(exp)
        if k in (8, 10):
            np.testing.assert_array_equal(a[ok], exp[ok])
        else:
            tol = 2e-5 * np.abs(exp) + 1e-6 * np.broadcast_to(_scale(k, cube, v, w), exp.shape)
            assert np.all(np.abs(a - exp)[ok] <= tol[ok]), f"order {k}: max diff {np.max(np.abs(a - exp)[ok])}"


STORED = [
    ("big-endian float32", ">f4", 1.0, 0.0, None),
    ("native float32", "<f4", 1.0, 0.0, None),
    ("big-endian float64", ">f8", 1.0, 0.0, None),
    ("big-endian float32 scaled", ">f4", 0.5, 1.0, None),
]


def _stored(kind: str, seed: int = 0) -> tuple[np.ndarray, float, float, int | None, np.ndarray]:
    """A stored block and its scaling, plus the decoded float32 cube the oracle sees."""
    cube = _lines(seed)
    if kind == "int16":
        bscale, bzero, blank = 1e-3, 0.5, -32768
        q = np.round((np.nan_to_num(cube, nan=0.0, posinf=0.0) - 0.5) / 1e-3).astype(np.int16)
        q[np.isnan(cube)] = blank
        raw = q.astype(">i2")
        return raw, bscale, bzero, blank, _decode(raw, bscale, bzero, blank)
    if kind == "uint8":
        q = np.clip(np.round(np.nan_to_num(cube, nan=0.0, posinf=0.0) * 20 + 128), 0, 254).astype(np.uint8)
        q[np.isnan(cube)] = 255
        return q, 0.05, -6.4, 255, _decode(q, 0.05, -6.4, 255)
    if kind == "int32":
        q = np.round(np.nan_to_num(cube, nan=0.0, posinf=0.0) * 1e5).astype(">i4")
        q[np.isnan(cube)] = -(2**31)
        return q, 1e-5, 0.0, -(2**31), _decode(q, 1e-5, 0.0, -(2**31))
    _, dt, bscale, bzero, blank = next(s for s in STORED if s[0] == kind)
    raw = cube.astype(dt)
    return raw, bscale, bzero, blank, _decode(raw, bscale, bzero, blank)


KINDS = [s[0] for s in STORED] + ["int16", "uint8", "int32"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("threshold", [None, 0.4, -0.2])
def test_reference_all_orders_one_pass(kind: str, threshold: float | None) -> None:
    raw, bscale, bzero, blank, cube = _stored(kind)
    v, w = _axis()
    got = moment_maps_raw(raw, v, w, orders=REF_ORDERS, threshold=threshold, bscale=bscale, bzero=bzero, blank=blank)
    want = moment_maps(cube, v, w, orders=REF_ORDERS, threshold=threshold)
    _check_ref(got, want, cube, v, w)


@pytest.mark.parametrize("order", REF_ORDERS)
def test_reference_each_order_alone_and_unequal_widths(order: int) -> None:
    raw, *_, cube = _stored("big-endian float32", seed=1)
    v, w = _axis(equal=False)
    w[5] = 0.0  # a zero integration weight is allowed
    for threshold in (None, 0.5):
        got = moment_maps_raw(raw, v, w, orders=[order], threshold=threshold)
        want = moment_maps(cube, v, w, orders=[order], threshold=threshold)
        assert set(got) == {order}
        _check_ref(got, want, cube, v, w)


def test_reference_closed_form() -> None:
    """Independent of the oracle: a single Gaussian line in every pixel."""
    v = np.linspace(-300.0, 300.0, 241)
    w = np.full(v.size, v[1] - v[0])
    line = 2.0 * np.exp(-0.5 * ((v - 40.0) / 25.0) ** 2)
    raw = np.broadcast_to(line[:, None, None], (v.size, 3, 4)).astype(">f4")
    got = moment_maps_raw(raw, v, w, orders=[0, 1, 2, 3, 4, 8], threshold=None)
    np.testing.assert_allclose(got[0], 2.0 * 25.0 * np.sqrt(2 * np.pi), rtol=1e-5)
    np.testing.assert_allclose(got[1], 40.0, atol=1e-4)
    np.testing.assert_allclose(got[2], 25.0**2, rtol=1e-5)
    np.testing.assert_allclose(got[3], 0.0, atol=1e-4)
    np.testing.assert_allclose(got[4], 0.0, atol=1e-3)
    np.testing.assert_allclose(got[8], np.float32(line.max()), rtol=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_chunked_equals_whole_and_strided_views(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runtime._state, "threads", threads)
    monkeypatch.setattr(runtime, "MIN_VOXELS_PER_THREAD", 1)
    raw, *_ = _stored("big-endian float32")
    v, w = _axis()
    whole = moment_maps_raw(raw, v, w, orders=REF_ORDERS, threshold=0.1)
    for y0, y1 in ((0, 4), (4, 5), (5, NY)):
        part = moment_maps_raw(raw[:, y0:y1], v, w, orders=REF_ORDERS, threshold=0.1)
        for k in REF_ORDERS:
            np.testing.assert_array_equal(part[k], whole[k][y0:y1])
    # a transposed stored layout (x not contiguous) reads the same voxels
    stored_t = np.ascontiguousarray(np.transpose(raw, (0, 2, 1)))
    view = np.transpose(stored_t, (0, 2, 1))
    assert view.strides[2] != view.itemsize
    strided = moment_maps_raw(view, v, w, orders=REF_ORDERS, threshold=0.1)
    for k in REF_ORDERS:
        np.testing.assert_array_equal(strided[k], whole[k])
    casa_whole = casa_moment_maps_raw(raw, v, w, moments=CASA_MOMS)
    casa_part = casa_moment_maps_raw(raw[:, 3:9], v, w, moments=CASA_MOMS)
    for k in CASA_MOMS:
        np.testing.assert_array_equal(casa_part[k], casa_whole[k][3:9])


@pytest.mark.parametrize("kind", ["big-endian float32", "native float32", "int16", "uint8"])
@pytest.mark.parametrize("rng_kw", [{}, {"include": [0.2, 2.5]}, {"exclude": [-0.3, 0.3]}, {"include": 1.0},
                                    {"include": [-1]}])
@pytest.mark.parametrize("equal", [True, False])
def test_casa_every_moment(kind: str, rng_kw: dict, equal: bool) -> None:
    raw, bscale, bzero, blank, cube = _stored(kind, seed=2)
    v, w = _axis(equal)
    got = casa_moment_maps_raw(raw, v, w, moments=CASA_MOMS, bscale=bscale, bzero=bzero, blank=blank, **rng_kw)
    want = casa_moment_maps(cube, v, w, moments=CASA_MOMS, **rng_kw)
    for k in CASA_MOMS:
        np.testing.assert_array_equal(np.isnan(got[k]), np.isnan(want[k]), err_msg=f"NaN positions of moment {k}")
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=0, equal_nan=True, err_msg=f"moment {k}")


def test_bad_input_is_refused() -> None:
    raw, *_ = _stored("big-endian float32")
    v, w = _axis()
    with pytest.raises(ValueError, match="median coordinate"):
        casa_moment_maps_raw(raw, v, w, moments=[4])  # moment 4 needs a one-signed range, as in CASA
    with pytest.raises(ValueError, match="only one of include or exclude"):
        casa_moment_maps_raw(raw, v, w, moments=[0], include=[0, 1], exclude=[2, 3])
    with pytest.raises(ValueError, match="unsupported FITS data type"):
        moment_maps_raw(raw.astype(np.complex64), v, w, orders=[0])
    with pytest.raises(ValueError, match="orders"):
        moment_maps_raw(raw, v, w, orders=[7])
    with pytest.raises(ValueError, match="spectral, y, x"):
        moment_maps_raw(raw[0], v, w, orders=[0])


def test_fits_file_int16_bscale_bzero_blank(tmp_path: Path) -> None:
    """A BITPIX=16 file with BSCALE/BZERO/BLANK: read_raw + compiled == read + oracle == astropy's scaling."""
    raw, bscale, bzero, blank, cube = _stored("int16", seed=3)
    hdu = fits.PrimaryHDU(np.asarray(raw, dtype=np.int16))
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = bscale, bzero, blank
    for k, (ctype, crval, cdelt) in enumerate((("RA---SIN", 10.0, -1e-3), ("DEC--SIN", 20.0, 1e-3),
                                               ("VRAD", 1.45e6, 2.5e3)), start=1):
        hdu.header[f"CTYPE{k}"], hdu.header[f"CRVAL{k}"], hdu.header[f"CDELT{k}"] = ctype, crval, cdelt
        hdu.header[f"CRPIX{k}"] = 1.0
    hdu.header["CUNIT3"] = "m/s"
    path = tmp_path / "scaled_int16.fits"
    hdu.writeto(path)
    image = open_fits_image(path)
    try:
        block = image.source.read_raw()
        assert block.data.dtype == np.dtype(">i2") and not block.data.flags.owndata  # a view, no copy
        assert (block.bscale, block.bzero, block.blank) == (bscale, bzero, blank)
        v, w = _axis()
        got = moment_maps_raw(block.data, v, w, orders=REF_ORDERS, bscale=block.bscale, bzero=block.bzero,
                              blank=block.blank)
        native = image.source.read()
        _check_ref(got, moment_maps(native, v, w, orders=REF_ORDERS), native, v, w)
        with fits.open(path) as hdul:  # astropy's own scaling (float32 + NaN for BLANK)
            scaled = hdul[0].data
            np.testing.assert_allclose(native, scaled, rtol=1e-6, atol=1e-6 * bscale, equal_nan=True)
        part = image.source.read_raw(z=slice(5, 20), y=slice(2, 6))
        assert part.data.shape == (15, 4, NX)
        np.testing.assert_array_equal(part.data, np.asarray(raw)[5:20, 2:6])
    finally:
        image.close()


def test_fits_file_with_stokes_axis_and_image(tmp_path: Path) -> None:
    """read_raw drops a degenerate Stokes axis and presents images as one channel, like read()."""
    cube = _lines(4)
    hdu = fits.PrimaryHDU(cube[None].astype(">f4"))  # (stokes, z, y, x)
    for k, ctype in enumerate(("RA---SIN", "DEC--SIN", "VRAD", "STOKES"), start=1):
        hdu.header[f"CTYPE{k}"], hdu.header[f"CRPIX{k}"] = ctype, 1.0
        hdu.header[f"CRVAL{k}"], hdu.header[f"CDELT{k}"] = (1.0, 1.0) if ctype == "STOKES" else (10.0, 1e-3)
    hdu.header["CRVAL3"], hdu.header["CDELT3"], hdu.header["CUNIT3"] = 1.45e6, 2.5e3, "m/s"
    path = tmp_path / "stokes.fits"
    hdu.writeto(path)
    image = open_fits_image(path)
    try:
        block = image.source.read_raw(z=slice(2, 30), y=slice(1, 12))
        assert block.data.shape == (28, 11, NX)
        np.testing.assert_array_equal(_decode(block.data, 1.0, 0.0, None), image.source.read(z=slice(2, 30),
                                                                                           y=slice(1, 12)))
    finally:
        image.close()
    plane = tmp_path / "image.fits"
    fits.PrimaryHDU(cube[7].astype(">f4")).writeto(plane)
    image = open_fits_image(plane)
    try:
        block = image.source.read_raw()
        assert block.data.shape == (1, NY, NX)
        np.testing.assert_array_equal(_decode(block.data, 1.0, 0.0, None), image.source.read())
    finally:
        image.close()


def test_concurrent_jobs_get_the_same_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two heavy jobs calling the parallel kernel at once (the dispatcher's threads) stay correct."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setitem(runtime._state, "threads", 2)
    monkeypatch.setattr(runtime, "MIN_VOXELS_PER_THREAD", 1)
    raw, *_ = _stored("big-endian float32")
    v, w = _axis()
    whole = moment_maps_raw(raw, v, w, orders=REF_ORDERS)
    casa = casa_moment_maps_raw(raw, v, w, moments=CASA_MOMS)
    with ThreadPoolExecutor(4) as pool:
        refs = [pool.submit(moment_maps_raw, raw, v, w, orders=REF_ORDERS) for _ in range(6)]
        casas = [pool.submit(casa_moment_maps_raw, raw, v, w, moments=CASA_MOMS) for _ in range(6)]
        for f in refs:
            for k in REF_ORDERS:
                np.testing.assert_array_equal(f.result()[k], whole[k])
        for f in casas:
            for k in CASA_MOMS:
                np.testing.assert_array_equal(f.result()[k], casa[k])


def test_grouped_rows_give_the_same_maps() -> None:
    """Long kernel rows (``group_rows``) change nothing: the same maps as image rows, bit for bit."""
    from cpu_fallback.compiled.rawdata import group_rows

    rng = np.random.default_rng(11)
    wide = rng.normal(0.5, 1.0, (NZ, 12, NX + 1)).astype(">f4")
    wide[rng.random(wide.shape) < 0.03] = np.nan
    contiguous = np.ascontiguousarray(wide[:, :, :NX])
    rows_apart = wide[:, :, :NX]  # rows not contiguous in the plane: not grouped
    view, r = group_rows(contiguous)
    assert r == 12 and view.shape == (NZ, 1, 12 * NX) and np.shares_memory(view, contiguous)
    assert group_rows(rows_apart)[1] == 1
    assert group_rows(contiguous, target=3 * NX)[1] == 3  # the largest divisor of ny within the target
    v, w = _axis()
    a = moment_maps_raw(contiguous, v, w, orders=REF_ORDERS, threshold=0.1)
    b = moment_maps_raw(rows_apart, v, w, orders=REF_ORDERS, threshold=0.1)
    for k in REF_ORDERS:
        np.testing.assert_array_equal(a[k], b[k])
    ca = casa_moment_maps_raw(contiguous, v, w, moments=CASA_MOMS)
    cb = casa_moment_maps_raw(rows_apart, v, w, moments=CASA_MOMS)
    for k in CASA_MOMS:
        np.testing.assert_array_equal(ca[k], cb[k])
