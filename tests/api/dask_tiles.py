"""Tile functions for the Dask lane tests: a module the worker processes import cheaply (NumPy only)."""

from __future__ import annotations

import time

import numpy as np


def row_sums(block: np.ndarray) -> np.ndarray:
    """Σ over channels and columns of each row of a ``(nz, ny, nx)`` block (NaN skipped)."""
    return np.nansum(block, axis=(0, 2))


def slow_row_sums(block: np.ndarray) -> np.ndarray:
    """:func:`row_sums` after 0.2 s, so that cancelling finds tiles still queued."""
    time.sleep(0.2)
    return row_sums(block)
