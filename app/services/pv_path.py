"""Geometry of a position-velocity path: sample a pixel polyline at (at most) one-pixel steps.

Pure NumPy, no astropy: the PV service converts the request's vertices to 0-based pixel
coordinates first (``vertices`` are already pixels; ``points_ra_dec`` go through the celestial
WCS, e.g. ``wcs.celestial.world_to_pixel_values(ra, dec)``, which is 0-based) and then calls
:func:`polyline_samples`. The resulting samples and unit normals feed the ``pv_box_sample``
kernel (``cpu_fallback.pv`` / ``gpu_kernels.pv``); ``positions_px`` is the wire's
``positions_base64`` and ``total_length_px`` its ``total_length`` (client contract §4.5).

Sampling rule: a segment of length ``L`` gets ``n = max(1, ceil(L))`` equal steps of
``L / n <= 1`` pixel, sampled at ``j / n`` for ``j = 0 .. n-1``; the next segment starts at the
shared vertex (so a joint is sampled once) and the final vertex is appended, giving
``sum(n) + 1`` samples. The normal at a sample is the unit perpendicular ``(-u_y, u_x)`` of its
segment's direction ``u``; at an interior vertex it is the normalised sum of the two adjacent
segments' normals (the bisector), or the outgoing segment's normal where the path turns back
on itself (the sum vanishes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Vertices closer than this (pixels) to the previous kept vertex count as duplicates, so
#: round-off from an RA/Dec -> pixel conversion does not create a zero-length segment.
DUPLICATE_TOLERANCE_PX = 1e-9

#: Slack subtracted before ``ceil`` so a length of ``5 + 1e-12`` px gets 5 steps, not 6.
_CEIL_SLACK = 1e-9


@dataclass(frozen=True, eq=False)
class PvPath:
    """Samples along a pixel polyline.

    Attributes
    ----------
    sample_x, sample_y : numpy.ndarray
        ``(ns,)`` float64 sample positions, pixels (x = column, y = row, 0-based).
    normal_x, normal_y : numpy.ndarray
        ``(ns,)`` float64 unit normal to the path at each sample.
    positions_px : numpy.ndarray
        ``(ns,)`` float64 cumulative path length at each sample, pixels, starting at 0.
    total_length_px : float
        Length of the polyline in pixels (``positions_px[-1]``).
    vertex_count : int
        Number of vertices after dropping consecutive duplicates.
    """

    sample_x: np.ndarray
    sample_y: np.ndarray
    normal_x: np.ndarray
    normal_y: np.ndarray
    positions_px: np.ndarray
    total_length_px: float
    vertex_count: int

    @property
    def num_samples(self) -> int:
        """Number of samples ``ns`` (the PV image has ``ns`` columns)."""
        return int(self.sample_x.size)


def polyline_samples(vertices_xy: np.ndarray) -> PvPath:
    """Sample a polyline at steps of at most one pixel, with unit normals and path positions.

    Parameters
    ----------
    vertices_xy : numpy.ndarray
        ``(nv, 2)`` array-like of ``(x, y)`` vertex positions in 0-based pixels (x = column,
        y = row); integers or floats.

    Returns
    -------
    PvPath
        ``ns = 1 + sum_i max(1, ceil(L_i))`` samples, where ``L_i`` is the length of segment ``i``
        in pixels. Sample ``j`` of segment ``i`` (from ``P_i`` to ``P_{i+1}``) is
        ``P_i + (j / n_i) (P_{i+1} - P_i)`` at path position ``sum_{m<i} L_m + (j / n_i) L_i``;
        the last sample is the last vertex at position ``total_length_px = sum_i L_i``.

    Raises
    ------
    ValueError
        If the array is not ``(nv, 2)``, holds a non-finite value, or has fewer than 2
        distinct vertices once consecutive duplicates are dropped.
    """
    v = np.asarray(vertices_xy, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2:
        raise ValueError(f"PV vertices must be an (n, 2) array of (x, y) pixel positions, got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("PV vertices must be finite pixel positions (a sky position may be off the WCS)")
    v = _drop_consecutive_duplicates(v)
    if v.shape[0] < 2:
        raise ValueError(
            f"a PV path needs at least 2 distinct vertices, got {v.shape[0]} "
            "after dropping consecutive duplicates"
        )

    d = np.diff(v, axis=0)  # (nseg, 2)
    length = np.hypot(d[:, 0], d[:, 1])
    seg_normal = np.stack([-d[:, 1], d[:, 0]], axis=1) / length[:, None]
    steps = np.maximum(1, np.ceil(length - _CEIL_SLACK)).astype(np.int64)
    starts = np.concatenate([[0.0], np.cumsum(length)])

    seg = np.repeat(np.arange(length.size), steps)
    first = np.concatenate([[0], np.cumsum(steps)[:-1]])
    j = np.arange(seg.size) - np.repeat(first, steps)
    n = steps[seg]
    # (j * d) / n rather than (j / n) * d: exact for integer vertices whenever n divides j * d.
    x = np.append(v[seg, 0] + (j * d[seg, 0]) / n, v[-1, 0])
    y = np.append(v[seg, 1] + (j * d[seg, 1]) / n, v[-1, 1])
    pos = np.append(starts[seg] + (j * length[seg]) / n, starts[-1])

    normal = np.vstack([seg_normal[seg], seg_normal[-1:]])
    joints = first[1:]  # first sample of every segment but the first: an interior vertex
    if joints.size:
        bis = seg_normal[:-1] + seg_normal[1:]
        norm = np.hypot(bis[:, 0], bis[:, 1])
        ok = norm > 1e-12
        normal[joints[ok]] = bis[ok] / norm[ok, None]
    return PvPath(
        sample_x=x,
        sample_y=y,
        normal_x=np.ascontiguousarray(normal[:, 0]),
        normal_y=np.ascontiguousarray(normal[:, 1]),
        positions_px=pos,
        total_length_px=float(starts[-1]),
        vertex_count=int(v.shape[0]),
    )


def _drop_consecutive_duplicates(v: np.ndarray) -> np.ndarray:
    """Keep a vertex only if it is farther than the tolerance from the previous kept one."""
    if v.shape[0] == 0:
        return v
    kept = [v[0]]
    for p in v[1:]:
        if np.hypot(*(p - kept[-1])) > DUPLICATE_TOLERANCE_PX:
            kept.append(p)
    return np.asarray(kept)
