"""Compiled (numba) CPU fast paths of the ``cpu_fallback`` tree.

The readable NumPy kernels of :mod:`cpu_fallback` stay the oracle; the modules here compute the
same numbers (within the tolerances their docstrings state) in one or two passes, in parallel
over rows or channels, straight from the raw FITS data where that applies:

- :mod:`cpu_fallback.compiled.moments_ref` -- moments, API-reference convention;
- :mod:`cpu_fallback.compiled.moments_casa` -- moments, CASA ``immoments`` convention;
- :mod:`cpu_fallback.compiled.moments_casa_median` -- CASA moments 3 and 4 (medians) by selection;
- :mod:`cpu_fallback.compiled.noise` -- per-channel median and MAD by selection;
- :mod:`cpu_fallback.compiled.linewidth` -- the per-pixel Gaussian line-width fit, one spectrum per
  iteration of a parallel loop;
- :mod:`cpu_fallback.compiled.stats` -- CASA ``imstat`` of a region: one pass, then a selection pass;
- :mod:`cpu_fallback.compiled.baseline` -- per-pixel baseline: normal equations in one pass, residual streamed;
- :mod:`cpu_fallback.compiled.runtime` -- cache directory, thread count, warm-up.

Import :mod:`cpu_fallback.compiled.runtime` (or call :func:`available`) before anything imports
numba, so that the on-disk cache directory is set first. These modules have no GPU twins: the
GPU tree has its own kernels, compared with the oracle.
"""

from __future__ import annotations

from cpu_fallback.compiled.runtime import available

__all__ = ["available"]
