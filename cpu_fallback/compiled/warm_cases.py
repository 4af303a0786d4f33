"""The warm-up calls: every compiled kernel on tiny inputs of the common stored types.

Stored types warmed: big-endian float32 (FITS ``BITPIX = -32``, the fused read), native float32
(in-memory cubes) and big-endian int16 with BSCALE/BZERO/BLANK (``BITPIX = 16``, the decoded-row
read). Other types (``BITPIX`` 8, 32, 64, -64) compile on first use and are cached on disk too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def default_cases() -> list[Callable[[], object]]:
    """Zero-argument calls that compile (or load) every kernel specialisation worth warming."""
    from cpu_fallback.compiled import linewidth, moment_errors, moments_casa, moments_ref, noise  # noqa: PLC0415

    nz, ny, nx = 4, 2, 3
    v = np.linspace(-1.0, 1.0, nz)
    w = np.ones(nz)
    base = np.arange(nz * ny * nx, dtype=np.float32).reshape(nz, ny, nx)
    cubes = [(base.astype(">f4"), {}), (base, {}), (base.astype(">i2"), {"bscale": 2.0, "bzero": 1.0, "blank": -1})]
    cases: list[Callable[[], object]] = []
    for cube, scaling in cubes:
        cases.append(lambda c=cube, s=scaling: moments_ref.moment_maps_raw(
            c, v, w, orders=sorted(moments_ref.COMPILED_ORDERS), **s))
        cases.append(lambda c=cube, s=scaling: moments_casa.casa_moment_maps_raw(
            c, v, w, moments=sorted(moments_casa.COMPILED_MOMENTS), include=(0.0, 1e30), **s))
        cases.append(lambda c=cube, s=scaling: linewidth.gaussian_linewidth_raw(c, v, w, **s))
    cases.append(lambda: noise.channel_mad(base))
    cases.append(lambda: moment_errors.moment_sigma_maps(base, v, w, np.ones(nz), threshold=1.0))
    from cpu_fallback.compiled import stats  # noqa: PLC0415 - JS9 imstat: FITS images with and without a region

    region = np.ones((ny, nx), dtype=bool)
    for cube, _ in cubes[:2]:
        cases.append(lambda c=cube: stats.region_stats_raw(c))
        cases.append(lambda c=cube, m=region: stats.region_stats_raw(c, m))
    from cpu_fallback.compiled import baseline  # noqa: PLC0415

    for cube, scaling in cubes:
        cases.append(lambda c=cube, s=scaling: baseline.subtract_baseline_raw(c, [0, 1, 2, 3], order=1, **s))
    cases.append(lambda: baseline.subtract_baseline_raw(base, [0, 1, 3], method="median"))
    return cases
