"""Default contour levels of ``imview``: logarithmic from a few times the noise to the peak.

Ten linear levels between the minimum and the maximum of a radio image all sit on its brightest
source (on 3C 273 they never reach the jet). The default is therefore **logarithmic**:

``σ = 1.4826 · median(|I − median(I)|)`` (robust noise of the finite pixels of the smoothed plane
inside the region), ``lo = k·σ`` (``noise_multiple`` k, default 3) and, for ``n = n_levels``,

``level_i = lo · (peak / lo)^(i/n)``, ``i = 0 … n − 1``

(the lowest level is exactly ``k·σ``; the highest lies one ratio step below the peak). When the
plane has no emission above ``k·σ`` (or σ = 0) the levels fall back to the linear rule
(``level_scale: "linear"``: ``n`` levels evenly inside ``(min, max)``), and the answer says so.
The JS9 CASA analysis API defines only ``n_levels`` and ``smoothing_sigma``: both keep their
meaning, explicit ``levels`` still win, and ``level_scale: "linear"`` restores the linear rule.
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826
LEVEL_SCALES = ("log", "linear")


def robust_sigma(values: np.ndarray) -> float:
    """``1.4826 · MAD`` of the finite values (0 when there are none)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(finite - np.median(finite))))


def log_levels(values: np.ndarray, *, n_levels: int, noise_multiple: float) -> tuple[list[float], float] | None:
    """``(levels, σ)`` of the logarithmic rule, or ``None`` when the plane has nothing above ``k·σ``."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or n_levels < 1:
        return None
    sigma = robust_sigma(finite)
    lo, peak = noise_multiple * sigma, float(finite.max())
    if not (sigma > 0 and peak > lo > 0):
        return None
    steps = np.arange(n_levels, dtype=np.float64) / n_levels
    return [float(v) for v in lo * (peak / lo) ** steps], sigma
