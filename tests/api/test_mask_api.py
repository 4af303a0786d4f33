"""Noise-aware masks through the API (issue 17 item 3): moments, line width, stacking, bad specs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.encoding import decode_array
from app.settings import Settings
from cpu_fallback import linewidth as cpu_lw
from cpu_fallback import smooth_clip as sc
from kernel_common.constants import FWHM_PER_SIGMA
from tests.api.conftest import TOKEN, decode, open_dataset, write_cube

NZ, NY, NX = 40, 48, 48
V0, DV = 100.0, -5.0  # km/s
SPEC = {"method": "smooth_and_clip", "snr": 4.0, "spatial_smooth_beams": 1.5, "spectral_smooth_channels": 3,
        "dilate_channels": 1}


def _signal() -> np.ndarray:
    z, y, x = np.mgrid[:NZ, :NY, :NX].astype(np.float64)
    return 8.0 * np.exp(-0.5 * (((x - 22.0) / 4.0) ** 2 + ((y - 25.0) / 5.0) ** 2 + ((z - 19.0) / 4.0) ** 2))


def _beam_cov(beams: float) -> tuple[float, float, float]:
    """write_cube's beam (BMAJ 0.01°, BMIN 0.008°, BPA 30°) on its 0.004° pixels (RA to the left), by hand."""
    s_maj, s_min = beams * 2.5 / FWHM_PER_SIGMA, beams * 2.0 / FWHM_PER_SIGMA  # pixels
    pa = np.radians(30.0)
    u = np.array([-np.sin(pa), np.cos(pa)])  # the major axis in pixels: east is −x
    v = np.array([np.cos(pa), np.sin(pa)])
    c = s_maj ** 2 * np.outer(u, u) + s_min ** 2 * np.outer(v, v)
    return c[0, 0], c[0, 1], c[1, 1]


@pytest.fixture
def small_chunks(tmp_path: Path, data_dir: Path, settings: Settings):  # noqa: ANN201
    """A client whose 1 MiB chunk budget splits the mask into several channel blocks."""
    with TestClient(create_app(settings.model_copy(update={"chunk_megabytes": 1}))) as c:
        c.headers.update({"X-Visivo-Token": TOKEN})
        yield c


def _open(client: TestClient, path: Path, session: str | None = None) -> tuple[str, dict]:
    body = open_dataset(client, path, session)
    return body["dataset_id"], {"X-Visivo-Session": body["session_id"]}


@pytest.fixture
def source(small_chunks: TestClient, data_dir: Path) -> tuple[TestClient, str, dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    signal = _signal()
    cube = (signal + rng.normal(0.0, 1.0, signal.shape)).astype(np.float32)
    cube[3, 5, 7] = np.nan
    path = write_cube(data_dir / "src.fits", cube, crval3=V0 * 1e3, cdelt3=DV * 1e3)
    ds, headers = _open(small_chunks, path)
    return small_chunks, ds, headers, cube, signal


def _mask_of(info: dict) -> np.ndarray:
    """The returned mask: base64 uint8 0/1 (optionally qt-zlib), C order (z, y, x)."""
    flat = decode_array(info["data_base64"], info["compression"], dtype="u1")
    assert set(np.unique(flat)) <= {0, 1}
    return flat.reshape(info["shape"]).astype(bool)


def _kernel_mask(cube: np.ndarray) -> np.ndarray:
    mask, _ = sc.smooth_clip_mask(cube, covariances=(None, _beam_cov(1.5)), widths=(1, 3), snr=4.0, dilate=1)
    return mask


def test_moment_mask_recovers_the_source_and_equals_numpy(source) -> None:  # noqa: ANN001
    client, ds, headers, cube, signal = source
    body = client.post("/v1/products/moment", headers=headers, json={
        "dataset_id": ds, "order": 0, "mask": SPEC, "return_mask": True}).json()
    assert body["valid"], body
    (info,) = body["masks"]
    assert info["shape"] == [NZ, NY, NX] and info["channel_start"] == 0 and info["channel_end"] == NZ - 1
    mask = _mask_of(info)
    # the whole-cube kernel with the beam converted by hand equals the chunked, halo'd service mask
    np.testing.assert_array_equal(mask, _kernel_mask(cube))
    assert info["voxels"] == mask.sum() and info["fraction"] == pytest.approx(mask.mean())
    assert mask[signal > 5.0].mean() >= 0.95
    assert mask[signal < 1e-4].mean() <= 1e-3 and not mask[3, 5, 7]
    kept = np.where(mask, cube.astype(np.float64), 0.0)
    np.testing.assert_allclose(decode(body, shape=(NY, NX)), np.where(mask.any(0), kept.sum(0) * abs(DV), np.nan),
                               rtol=1e-5, atol=1e-4)


def test_moment_orders_uncertainty_and_casa_over_the_mask(source) -> None:  # noqa: ANN001
    client, ds, headers, cube, _ = source
    mask = _kernel_mask(cube)[10:31]
    body = client.post("/v1/products/moment", headers=headers, json={
        "dataset_id": ds, "orders": [0, 1, 8], "uncertainty": True, "channel_start": 10,
        "channel_end": 30, "mask": SPEC}).json()
    assert body["valid"], body
    assert body["masks"][0]["channel_start"] == 10 and body["masks"][0]["shape"] == [21, NY, NX]
    assert body["masks"][0]["data_base64"] is None
    assert body["noise_source"].startswith("estimated")  # from the whole planes, not the mask
    noise = np.array(body["noise_per_channel"])[:, None, None]
    assert np.median(noise) == pytest.approx(1.0, rel=0.1)
    v = (V0 + DV * np.arange(NZ))[10:31, None, None]
    x = np.where(mask, cube[10:31].astype(np.float64), 0.0)
    m0 = x.sum(0) * abs(DV)
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = (x * v).sum(0) * abs(DV) / m0
        s1 = np.sqrt((mask * ((v - m1) * abs(DV) * noise) ** 2).sum(0)) / np.abs(m0)
    maps = {m["order"]: m for m in body["maps"]}
    got0, got1 = decode(maps[0], shape=(NY, NX)), decode(maps[1], shape=(NY, NX))
    any_kept = mask.any(0)
    np.testing.assert_allclose(got0[any_kept], m0[any_kept], rtol=1e-5, atol=1e-4)
    fin = np.isfinite(got1)
    assert fin[20:30, 17:27].all()
    np.testing.assert_allclose(got1[fin], m1[fin], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(decode(maps[1], "sigma_base64", (NY, NX))[fin], s1[fin], rtol=1e-4)
    peak = np.where(mask, cube[10:31], -np.inf).max(0)
    np.testing.assert_array_equal(decode(maps[8], shape=(NY, NX))[any_kept], peak[any_kept].astype(np.float32))
    casa = client.post("/v1/products/moment", headers=headers, json={
        "dataset_id": ds, "order": 0, "convention": "casa", "channel_start": 10, "channel_end": 30,
        "mask": SPEC}).json()
    assert casa["valid"], casa
    np.testing.assert_allclose(decode(casa, shape=(NY, NX))[any_kept], m0[any_kept], rtol=1e-5, atol=1e-4)


def test_saved_mask_fits_cache_and_task(source, tmp_path: Path) -> None:  # noqa: ANN001
    client, ds, headers, cube, _ = source
    req = {"dataset_id": ds, "order": 0, "channel_start": 5, "channel_end": 34, "mask": SPEC, "save_mask": True,
           "save": True}
    body = client.post("/v1/products/moment", headers=headers, json=req).json()
    assert body["valid"], body
    path = body["masks"][0]["output_path"]
    with fits.open(path) as hdul:
        hdu = hdul[0]
        assert hdu.header["BITPIX"] == 8 and hdu.data.shape == (30, NY, NX)
        np.testing.assert_array_equal(hdu.data.astype(bool), _kernel_mask(cube)[5:35])
        assert hdu.header["CTYPE3"].startswith("VRAD") and hdu.header["CRPIX3"] == pytest.approx(1.0 - 5)
        assert hdu.header["CTYPE1"] == "RA---SIN" and "BMAJ" in hdu.header
        history = "\n".join(hdu.header["HISTORY"])
        assert "smooth_and_clip snr=4" in history and "1.5 beam" in history and "channels 5..34" in history
    with fits.open(body["output_path"]) as hdul:
        assert "smooth_and_clip" in "\n".join(hdul[0].header["HISTORY"])
    again = client.post("/v1/products/moment", headers=headers, json=req).json()
    assert again["cache_hit"] and again["masks"][0]["output_path"] == path
    other = client.post("/v1/products/moment", headers=headers, json={**req, "mask": {**SPEC, "snr": 5.0}}).json()
    assert other["valid"] and not other["cache_hit"]
    assert other["masks"][0]["voxels"] < body["masks"][0]["voxels"]
    task = client.post("/v1/tasks/moment", headers=headers, json={
        "dataset_id": ds, "order": 0, "mask": {**SPEC, "dilate_channels": 0}}).json()
    for _ in range(400):
        status = client.get(f"/v1/tasks/{task['task_id']}", headers=headers).json()
        if status["status"] in ("done", "error"):
            break
        time.sleep(0.05)
    assert status["status"] == "done", status
    assert status["result"]["masks"][0]["voxels"] > 0


def test_linewidth_over_the_mask(source) -> None:  # noqa: ANN001
    client, ds, headers, cube, _ = source
    body = client.post("/v1/spectral/linewidth", headers=headers, json={
        "dataset_id": ds, "method": "ew", "snr": 0, "mask": SPEC, "return_mask": True, "compression": "qt-zlib"}).json()
    assert body["valid"], body
    info = body["masks"][0]
    mask = _mask_of(info)
    np.testing.assert_array_equal(mask, _kernel_mask(cube))
    masked = np.where(mask, cube, np.float32(np.nan))
    widths = np.full(NZ, abs(DV))
    expected = cpu_lw.equivalent_width(masked, widths, snr_cut=0.0, threshold=None)  # the mask replaces the cut
    got = decode(body, "ew_base64", (NY, NX))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)
    # closed form at the source centre: EW = Σ I·|Δv| / max I over the kept channels
    spec = cube[:, 25, 22][mask[:, 25, 22]].astype(np.float64)
    assert got[25, 22] == pytest.approx(spec.sum() * abs(DV) / spec.max(), rel=1e-5)
    # FWHM: the whole spectra of the pixels the mask touches are fitted, the others are NaN
    full = client.post("/v1/spectral/linewidth", headers=headers, json={
        "dataset_id": ds, "channel_start": 2, "channel_end": 37, "mask": SPEC}).json()
    assert full["valid"] and full["masks"][0]["shape"] == [36, NY, NX]
    touched = mask[2:38].any(axis=0)
    v = V0 + DV * np.arange(2, 38)
    fwhm, _ = cpu_lw.gaussian_linewidth(np.where(touched[None], cube[2:38], np.float32(np.nan)), v, widths[2:38],
                                        snr_cut=3.0, threshold=None)
    got_fwhm = decode(full, "fwhm_base64", (NY, NX))
    np.testing.assert_array_equal(got_fwhm, fwhm)
    assert np.isnan(got_fwhm[~touched]).all()
    # the source is 4 channels (20 km/s) wide in σ: FWHM 2.3548·20 km/s at the centre, to the noise
    assert got_fwhm[25, 22] == pytest.approx(FWHM_PER_SIGMA * 20.0, rel=0.1)


def test_stack_over_the_masks(small_chunks: TestClient, data_dir: Path) -> None:
    rng = np.random.default_rng(4)
    cubes = [(_signal() * scale + rng.normal(0.0, 1.0, (NZ, NY, NX))).astype(np.float32) for scale in (1.0, 0.7)]
    ids, session = [], None
    for i, c in enumerate(cubes):
        ds, headers = _open(small_chunks, write_cube(data_dir / f"s{i}.fits", c, crval3=V0 * 1e3, cdelt3=DV * 1e3),
                            session)
        session = headers["X-Visivo-Session"]
        ids.append(ds)
    body = small_chunks.post("/v1/spectral/stack", headers=headers, json={
        "dataset_ids": ids, "method": "mean", "mask": SPEC}).json()
    assert body["valid"], body
    spectra = []
    for c, info in zip(cubes, body["masks"], strict=True):
        mask = _kernel_mask(c)
        assert info["voxels"] == mask.sum() and info["dataset_id"] in ids
        with np.errstate(invalid="ignore"):
            spectra.append(np.where(mask, c, 0.0).sum((1, 2), dtype=np.float64) / mask.sum((1, 2)))
    stack = np.vstack(spectra)
    n = np.isfinite(stack).sum(axis=0)
    expected = np.where(n > 0, np.where(np.isfinite(stack), stack, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
    assert np.isnan(expected).any() and np.isfinite(expected[15:25]).all()  # channels without any mask voxel
    got = decode(body)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)
    cube_mode = small_chunks.post("/v1/spectral/stack", headers=headers, json={
        "dataset_ids": ids, "method": "mean", "mode": "cube", "mask": SPEC}).json()
    assert cube_mode["valid"], cube_mode
    with fits.open(cube_mode["output_path"]) as hdul:
        m0, m1 = _kernel_mask(cubes[0]), _kernel_mask(cubes[1])
        both = np.where(m0 & m1, (cubes[0] + cubes[1]) / 2, np.where(m0, cubes[0], np.where(m1, cubes[1], np.nan)))
        np.testing.assert_allclose(hdul[0].data, both, rtol=1e-6, equal_nan=True)


def test_pure_noise_is_rejected(client: TestClient, data_dir: Path) -> None:
    noise = np.random.default_rng(8).normal(0.0, 1.0, (NZ, 64, 64)).astype(np.float32)
    ds, headers = _open(client, write_cube(data_dir / "noise.fits", noise))
    body = client.post("/v1/products/moment", headers=headers, json={"dataset_id": ds, "order": 0,
                                                                      "mask": SPEC}).json()
    assert body["valid"], body
    assert body["masks"][0]["fraction"] <= 1e-3


@pytest.mark.parametrize(("mask", "message"), [
    ({"method": "threshold"}, "mask.method must be 'smooth_and_clip'"),
    ({"spectral_smooth_channels": 4}, "odd integers"),
    ({"spectral_smooth_channels": [3, 0]}, "odd integers"),
    ({"spatial_smooth_beams": -1}, "between 0 and 20"),
    ({"spectral_window": "gauss"}, "spectral_window must be one of boxcar, hann"),
    ({"snr": 1000}, "empty"),
])
def test_bad_specs_answer_valid_false(client: TestClient, data_dir: Path, mask: dict, message: str) -> None:
    cube = np.random.default_rng(2).normal(0.0, 1.0, (12, 16, 16)).astype(np.float32)
    ds, headers = _open(client, write_cube(data_dir / "bad.fits", cube))
    for route, extra in (("/v1/products/moment", {"order": 0}), ("/v1/spectral/linewidth", {})):
        r = client.post(route, headers=headers, json={"dataset_id": ds, **extra, "mask": mask})
        assert r.status_code == 200 and r.json()["valid"] is False
        assert message in r.json()["error"], r.json()


def test_validation_errors_and_missing_beam(client: TestClient, data_dir: Path) -> None:
    cube = np.random.default_rng(3).normal(0.0, 1.0, (12, 16, 16)).astype(np.float32)
    cube[6, 8, 8] = 30.0
    ds, headers = _open(client, write_cube(data_dir / "b.fits", cube))
    for mask, field in (({"snr": 0}, "snr"), ({"dilate_channels": -1}, "dilate_channels"),
                        ({"bogus": 1}, "bogus")):
        r = client.post("/v1/products/moment", headers=headers, json={"dataset_id": ds, "order": 0, "mask": mask})
        assert r.status_code == 422 and r.json()["valid"] is False and field in r.json()["error"], r.json()
    r = client.post("/v1/products/moment", headers=headers, json={"dataset_id": ds, "order": 0, "return_mask": True})
    assert r.json() == {"valid": False, "error": "return_mask and save_mask need a 'mask' specification."}
    path = data_dir / "nobeam.fits"
    with fits.open(write_cube(data_dir / "tmp.fits", cube)) as hdul:
        header = hdul[0].header.copy()
        for key in ("BMAJ", "BMIN", "BPA"):
            del header[key]
        fits.PrimaryHDU(hdul[0].data, header).writeto(path)
    nb, nb_headers = _open(client, path)
    r = client.post("/v1/products/moment", headers=nb_headers, json={"dataset_id": nb, "order": 0, "mask": SPEC})
    assert r.json()["valid"] is False and "no beam (BMAJ/BMIN)" in r.json()["error"]
    ok = client.post("/v1/products/moment", headers=nb_headers, json={
        "dataset_id": nb, "order": 0, "mask": {**SPEC, "spatial_smooth_pixels": 3.0}}).json()
    assert ok["valid"], ok
    assert "circular FWHM 3 px" in ok["masks"][0]["spec"]["spatial"]
    flat = client.post("/v1/products/moment", headers=nb_headers, json={
        "dataset_id": nb, "order": 0, "mask": {**SPEC, "spatial_smooth_beams": 0}}).json()
    assert flat["valid"] and flat["masks"][0]["spec"]["spatial"] == ["none"]


def test_mask_larger_than_the_memory_budget_is_refused(settings: Settings, data_dir: Path) -> None:
    """The packed mask (one bit per voxel, held for the request) counts against the per-request budget:
    8192 channels of 32×32 give a 1 MiB mask, over a 1 MiB budget, while one channel block fits."""
    cube = np.random.default_rng(3).normal(0.0, 1.0, (8192, 32, 32)).astype(np.float32)
    path = write_cube(data_dir / "long.fits", cube, crval3=V0 * 1e3, cdelt3=DV * 1e3)
    with TestClient(create_app(settings.model_copy(update={"memory_budget_mb": 1}))) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        ds, headers = _open(client, path)
        body = client.post("/v1/products/moment", json={"dataset_id": ds, "order": 0, "mask": SPEC},
                           headers=headers).json()
    assert body["valid"] is False and "Noise-aware mask of 32×32×8192 voxels" in body["error"], body
