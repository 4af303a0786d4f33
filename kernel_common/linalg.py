"""Batched linear algebra for small systems, for NumPy or CuPy."""

from __future__ import annotations

from typing import Any

import numpy as np


def cholesky_solve(g: Any, r: Any, xp: Any = np) -> Any:
    """Solve the SPD systems ``g[p] x[p] = r[p]`` by Cholesky; NaN where not positive definite.

    ``g = L L^T`` with ``L[j, j] = sqrt(g[j, j] - sum_{m<j} L[j, m]^2)`` and
    ``L[i, j] = (g[i, j] - sum_{m<j} L[i, m] L[j, m]) / L[j, j]``; then forward and back
    substitution. ``k`` small-array operations per step over all ``n`` systems, no loop over
    systems, so both kernel trees run the same arithmetic.

    Parameters
    ----------
    g : array
        ``(n, k, k)`` float64 symmetric matrices.
    r : array
        ``(n, k)`` float64 right-hand sides.
    xp : module, optional
        ``numpy`` (default) or ``cupy``.

    Returns
    -------
    array
        ``(n, k)`` float64 solutions; NaN rows where ``g[p]`` is not positive definite.
    """
    n, k = r.shape
    low = xp.zeros_like(g)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(k):
            d = g[:, j, j] - xp.sum(low[:, j, :j] ** 2, axis=1)
            low[:, j, j] = xp.sqrt(xp.where(d > 0, d, xp.nan))
            for i in range(j + 1, k):
                low[:, i, j] = (g[:, i, j] - xp.sum(low[:, i, :j] * low[:, j, :j], axis=1)) / low[:, j, j]
        z = xp.empty((n, k))
        for i in range(k):
            z[:, i] = (r[:, i] - xp.sum(low[:, i, :i] * z[:, :i], axis=1)) / low[:, i, i]
        x = xp.empty((n, k))
        for i in range(k - 1, -1, -1):
            x[:, i] = (z[:, i] - xp.sum(low[:, i + 1 :, i] * x[:, i + 1 :], axis=1)) / low[:, i, i]
    return x
