"""CPU reference tests for ``cpu_fallback.stacking`` against hand-computed spectra."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from cpu_fallback import stacking as st

NAN = np.nan


def _cubes() -> list[np.ndarray]:
    """Three 3x2x2 cubes whose spatial-mean spectra and peaks are easy to do by hand.

    A: ch0 [1,2,3,4] -> 2.5; ch1 [0,nan,2,4] -> 2; ch2 all blank -> nan; peak 4
    B: ch0 [5,5,5,5] -> 5;   ch1 [-1,1,1,3] -> 1;  ch2 [2,2,2,nan] -> 2; peak 5
    C: ch0 [0,0,0,0] -> 0;   ch1 [6,6,6,6] -> 6;   ch2 [4,4,4,4] -> 4;   peak 6
    """
    a = np.array([[1, 2, 3, 4], [0, NAN, 2, 4], [NAN] * 4], dtype=np.float32)
    b = np.array([[5, 5, 5, 5], [-1, 1, 1, 3], [2, 2, 2, NAN]], dtype=np.float32)
    c = np.array([[0, 0, 0, 0], [6, 6, 6, 6], [4, 4, 4, 4]], dtype=np.float32)
    return [x.reshape(3, 2, 2) for x in (a, b, c)]


SPECTRA = np.array([[2.5, 2.0, NAN], [5.0, 1.0, 2.0], [0.0, 6.0, 4.0]])
PEAKS = np.array([4.0, 5.0, 6.0])


def _spectra() -> tuple[np.ndarray, np.ndarray]:
    out = [st.mean_spectrum_finalize(st.mean_spectrum_partial(c)) for c in _cubes()]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def test_mean_spectra_and_peaks_hand_computed() -> None:
    spectra, peaks = _spectra()
    assert spectra.dtype == np.float64 and peaks.shape == (3,)
    np.testing.assert_array_equal(spectra, SPECTRA)
    np.testing.assert_array_equal(peaks, PEAKS)
    part = st.mean_spectrum_partial(_cubes()[0])
    np.testing.assert_array_equal(part, [[10, 6, 0], [4, 3, 0], [4, 4, -np.inf]])


@pytest.mark.parametrize(
    ("method", "weights", "expected"),
    [
        ("mean", None, [7.5 / 3, 3.0, 3.0]),
        ("median", None, [2.5, 2.0, 3.0]),
        ("weighted_mean", [1.0, 2.0, 3.0], [12.5 / 6, 22.0 / 6, 16.0 / 5]),
        ("weighted_mean", [1.0, 1.0, 1.0], [7.5 / 3, 3.0, 3.0]),
        ("weighted_mean", [0.0, 1.0, 0.0], [5.0, 1.0, 2.0]),
    ],
)
def test_combine_spectra_hand_computed(method: str, weights, expected) -> None:
    out = st.combine_spectra(SPECTRA, method=method, weights=weights)
    assert out.dtype == np.float32 and out.shape == (3,)
    np.testing.assert_allclose(out, expected, rtol=1e-7)


def test_weights_hand_computed() -> None:
    spectra, peaks = _spectra()
    np.testing.assert_array_equal(st.stack_weights(spectra, peaks, weight_by="uniform"), [1, 1, 1])
    np.testing.assert_array_equal(st.stack_weights(spectra, peaks, weight_by="peak"), [4, 5, 6])
    # MADs: A {2.5, 2} -> 0.25; B {5, 1, 2} -> 1; C {0, 6, 4} -> 2; w = 1 / (1.4826 MAD)^2
    rms = st.stack_weights(spectra, peaks, weight_by="rms")
    np.testing.assert_allclose(rms, 1.0 / (1.4826 * np.array([0.25, 1.0, 2.0])) ** 2, rtol=1e-14)
    # peak weighting end to end: ch0 (4*2.5 + 5*5 + 0)/15, ch1 (8 + 5 + 36)/15, ch2 (10 + 24)/11
    w = st.stack_weights(spectra, peaks, weight_by="peak")
    np.testing.assert_allclose(
        st.combine_spectra(spectra, method="weighted_mean", weights=w), [35 / 15, 49 / 15, 34 / 11], rtol=1e-7
    )
    with pytest.raises(ValueError):
        st.stack_weights(spectra, peaks, weight_by="snr")
    flat = np.ones((2, 5))  # sigma = 0 -> infinite weight, rejected by combine_spectra
    with pytest.raises(ValueError, match="finite"):
        st.combine_spectra(flat, method="weighted_mean", weights=st.stack_weights(flat, np.ones(2), weight_by="rms"))


def test_weight_errors() -> None:
    for bad in (None, [1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 0.0, 0.0], [1.0, NAN, 1.0]):
        with pytest.raises(ValueError):
            st.combine_spectra(SPECTRA, method="weighted_mean", weights=bad)
    with pytest.raises(ValueError):
        st.combine_spectra(SPECTRA, method="mode")


def test_all_blank_channel_is_nan() -> None:
    s = np.array([[1.0, NAN], [3.0, NAN]])
    for m, w in (("mean", None), ("median", None), ("weighted_mean", [1.0, 2.0])):
        out = st.combine_spectra(s, method=m, weights=w)
        assert out[0] == pytest.approx({"mean": 2.0, "median": 2.0, "weighted_mean": 7.0 / 3.0}[m])
        assert np.isnan(out[1])
    spec, peak = st.mean_spectrum_finalize(st.mean_spectrum_partial(np.full((2, 3, 3), NAN, np.float32)))
    assert np.isnan(spec).all() and np.isnan(peak)


def test_partials_chunked_equal_whole() -> None:
    rng = np.random.default_rng(0)
    cube = rng.normal(1.0, 2.0, (40, 17, 9)).astype(np.float32)
    cube[rng.random(cube.shape) < 0.1] = np.nan
    cube[3] = np.nan
    whole = st.mean_spectrum_partial(cube)
    parts = [st.mean_spectrum_partial(cube[:, a : a + 4]) for a in range(0, 17, 4)]
    comb = parts[0]
    for p in parts[1:]:
        comb = st.mean_spectrum_combine(comb, p)
    np.testing.assert_allclose(comb, whole, rtol=1e-12)
    s1, p1 = st.mean_spectrum_finalize(whole)
    s2, p2 = st.mean_spectrum_finalize(comb)
    np.testing.assert_allclose(s1, s2, rtol=1e-12)
    assert p1 == p2 == np.nanmax(cube)
    ref = [np.mean(plane[np.isfinite(plane)], dtype=np.float64) if np.isfinite(plane).any() else NAN for plane in cube]
    np.testing.assert_allclose(s1, ref, rtol=1e-12)


def test_stack_cubes_voxel_by_voxel() -> None:
    cubes = _cubes()
    mean = st.stack_cubes(cubes, method="mean")
    med = st.stack_cubes(cubes, method="median")
    wm = st.stack_cubes(cubes, method="weighted_mean", weights=[1.0, 2.0, 3.0])
    assert mean.dtype == med.dtype == wm.dtype == np.float32 and mean.shape == (3, 2, 2)
    # ch1, pixel (0,1): A blank, B 1, C 6
    assert mean[1, 0, 1] == 3.5 and med[1, 0, 1] == 3.5 and wm[1, 0, 1] == pytest.approx(20 / 5)
    # ch2, pixel (1,1): only C (4) is finite
    assert mean[2, 1, 1] == med[2, 1, 1] == wm[2, 1, 1] == 4.0
    # ch0, pixel (1,0): A 3, B 5, C 0 -> mean 8/3, median 3, weighted (3 + 10 + 0)/6
    assert mean[0, 1, 0] == pytest.approx(8 / 3) and med[0, 1, 0] == 3.0
    assert wm[0, 1, 0] == pytest.approx(13 / 6)
    blank = [np.full((3, 2, 2), NAN, np.float32)] * 2
    assert np.isnan(st.stack_cubes(blank)).all()
    with pytest.raises(ValueError, match="equally shaped"):
        st.stack_cubes([cubes[0], cubes[1][:, :1]])
    # chunked (y-slabs) equals whole
    halves = [st.stack_cubes([c[:, a : a + 1] for c in cubes]) for a in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(halves, axis=1), mean)


def test_gpu_twin_has_the_same_public_signatures() -> None:
    from gpu_kernels import stacking as gpu

    funcs = inspect.getmembers(st, inspect.isfunction)
    names = [n for n, f in funcs if not n.startswith("_") and f.__module__ == st.__name__]
    assert set(names) == {
        "mean_spectrum_partial", "mean_spectrum_combine", "mean_spectrum_finalize",
        "stack_weights", "combine_spectra", "stack_cubes",
    }  # fmt: skip
    for name in names:
        assert inspect.signature(getattr(gpu, name)) == inspect.signature(getattr(st, name))
