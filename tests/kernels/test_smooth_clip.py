"""Smooth-and-clip mask kernels (issue 17 item 3) against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback import smooth_clip as sc
from kernel_common.constants import FWHM_PER_SIGMA
from kernel_common.smoothing import beam_covariance_pixels, gaussian_kernel_2d, spectral_window

#: Default kernel set of a request: ({0} ∪ 1.5 beams) × ({1} ∪ 3 channels), beam 4 px circular.
_BEAM_COV = ((1.5 * 4.0 / FWHM_PER_SIGMA) ** 2, 0.0, (1.5 * 4.0 / FWHM_PER_SIGMA) ** 2)


def source_cube(seed: int = 1, amplitude: float = 8.0, noise: float = 1.0,
                shape: tuple[int, int, int] = (48, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """Noise σ = ``noise`` plus a 3-D Gaussian source (σ 5 px spatially, 4 channels); (cube, true signal)."""
    nz, ny, nx = shape
    z, y, x = np.mgrid[:nz, :ny, :nx].astype(np.float64)
    signal = amplitude * np.exp(-0.5 * (((x - 30.0) / 5.0) ** 2 + ((y - 33.0) / 5.0) ** 2 + ((z - 24.0) / 4.0) ** 2))
    rng = np.random.default_rng(seed)
    return (signal + rng.normal(0.0, noise, shape)).astype(np.float32), signal


def test_gaussian_kernel_has_the_requested_covariance() -> None:
    cov = (6.0, 1.5, 3.0)
    k = gaussian_kernel_2d(cov, truncate=6.0)
    r = k.shape[0] // 2
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    assert k.sum() == pytest.approx(1.0)
    # a sampled Gaussian's second moments equal the covariance to sampling accuracy (σ ≫ 1 px: ~1e-9)
    assert (k * dx * dx).sum() == pytest.approx(cov[0], rel=1e-6)
    assert (k * dx * dy).sum() == pytest.approx(cov[1], rel=1e-6)
    assert (k * dy * dy).sum() == pytest.approx(cov[2], rel=1e-6)


def test_beam_covariance_orientation() -> None:
    """BMAJ 6", BMIN 3", 1"/px with RA increasing to the left: PA 0 is along +y, PA 90 (east) along x."""
    m = np.array([[-1.0, 0.0], [0.0, 1.0]]) / 3600.0
    s_maj, s_min = (6.0 / FWHM_PER_SIGMA) ** 2, (3.0 / FWHM_PER_SIGMA) ** 2
    cxx, cxy, cyy = beam_covariance_pixels(6 / 3600, 3 / 3600, 0.0, m)
    assert (cxx, cxy, cyy) == pytest.approx((s_min, 0.0, s_maj))
    cxx, cxy, cyy = beam_covariance_pixels(6 / 3600, 3 / 3600, 90.0, m)
    assert (cxx, cxy, cyy) == pytest.approx((s_maj, 0.0, s_min), abs=1e-12)
    # PA 45: major axis towards north-east = (-x, +y) on this grid, so x and y anticorrelate
    cxx, cxy, cyy = beam_covariance_pixels(6 / 3600, 3 / 3600, 45.0, m)
    assert cxy == pytest.approx(-(s_maj - s_min) / 2)


def test_smoothing_a_delta_gives_the_kernels() -> None:
    cube = np.zeros((9, 21, 21), dtype=np.float32)
    cube[4, 10, 10] = 1.0
    cov = (2.0, 0.5, 1.0)
    spatial = sc.smooth_spatial(cube, cov=cov)
    k = gaussian_kernel_2d(cov)
    r = k.shape[0] // 2
    np.testing.assert_allclose(spatial[4, 10 - r:11 + r, 10 - r:11 + r], k, atol=1e-6)
    assert np.abs(spatial[3]).max() < 1e-6
    hann = sc.smooth_spectral(cube, channels=5, window="hann")
    np.testing.assert_allclose(hann[2:7, 10, 10], [0.25 / 3, 0.75 / 3, 1 / 3, 0.75 / 3, 0.25 / 3], rtol=1e-6)
    box = sc.smooth_spectral(cube, channels=3)
    np.testing.assert_allclose(box[:, 10, 10], [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(spectral_window(3, "hann"), [0.25, 0.5, 0.25])
    with pytest.raises(ValueError, match="odd"):
        spectral_window(4)


def test_dilation_and_blanks() -> None:
    mask = np.zeros((7, 1, 2), dtype=bool)
    mask[3, 0, 0] = True
    out = sc.dilate_spectral(mask, channels=2)
    assert out[:, 0, 0].tolist() == [False, True, True, True, True, True, False]
    assert not out[:, 0, 1].any()
    cube = np.full((5, 4, 4), 10.0, dtype=np.float32)
    cube += np.random.default_rng(0).normal(0, 1, cube.shape).astype(np.float32)
    cube[2, 1, 1] = np.nan
    m, _ = sc.smooth_clip_mask(cube, covariances=(None,), widths=(1,), snr=-100.0, dilate=1)
    assert not m[2, 1, 1] and m.sum() == cube.size - 1


@pytest.mark.parametrize("snr", [4.0])
def test_mask_recovers_a_gaussian_source(snr: float) -> None:
    cube, signal = source_cube()
    mask, sigma = sc.smooth_clip_mask(cube, covariances=(None, _BEAM_COV), widths=(1, 3), snr=snr, dilate=1)
    bright = signal > 5.0
    assert bright.sum() > 300
    assert mask[bright].mean() >= 0.95
    # noise of the unsmoothed cube: 1.4826·MAD ≈ 1 per channel (the source biases its few channels a little)
    assert np.median(sigma[0]) == pytest.approx(1.0, rel=0.03) and sigma[0].max() < 1.2
    # smoothing lowers the noise: boxcar of 3 by √3, and the Gaussian by its kernel's √Σk²
    assert np.median(sigma[1]) == pytest.approx(1 / np.sqrt(3), rel=0.06)
    k = gaussian_kernel_2d(_BEAM_COV)
    assert np.median(sigma[2]) == pytest.approx(np.sqrt((k * k).sum()), rel=0.06)


def test_mask_rejects_pure_noise() -> None:
    rng = np.random.default_rng(5)
    noise = rng.normal(0.0, 2.5, (48, 96, 96)).astype(np.float32)
    mask, _ = sc.smooth_clip_mask(noise, covariances=(None, _BEAM_COV), widths=(1, 3), snr=4.0, dilate=1)
    assert mask.mean() <= 1e-3


def test_channel_blocks_with_halos_equal_the_whole_cube() -> None:
    cube, _ = source_cube(seed=3, shape=(30, 24, 26))
    opts = {"covariances": (None, (3.0, 0.4, 2.0)), "widths": (1, 5), "snr": 2.5, "dilate": 2, "window": "hann"}
    whole, _ = sc.smooth_clip_mask(cube, **opts)
    halo = 5 // 2 + 2
    for z0, z1 in [(0, 7), (7, 19), (19, 30)]:
        r0, r1 = max(0, z0 - halo), min(30, z1 + halo)
        part, _ = sc.smooth_clip_mask(cube[r0:r1], **opts)
        np.testing.assert_array_equal(part[z0 - r0:z1 - r0], whole[z0:z1])


def test_plane_sigma_equals_the_noise_kernel() -> None:
    """The selection in plane_sigma gives exactly 1.4826 × the noise kernel's MAD (odd and even counts)."""
    from cpu_fallback.noise import channel_mad

    cube, _ = source_cube(seed=9, shape=(6, 15, 17))
    cube[1, :3] = np.nan  # an even count of finite pixels
    cube[2, :, :] = np.nan
    cube[2, 0, 0] = 1.0  # one finite pixel: NaN
    _, mad = channel_mad(cube)
    np.testing.assert_array_equal(sc.plane_sigma(cube), 1.4826 * mad)
