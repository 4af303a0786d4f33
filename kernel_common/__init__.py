"""Helpers shared by the two kernel trees (:mod:`cpu_fallback` and :mod:`gpu_kernels`).

Everything here is public, written once, and -- where it touches arrays -- written against an
array namespace ``xp`` (``numpy`` or ``cupy``) passed by the caller, so both trees run the same
arithmetic. This package imports only NumPy; CuPy is imported lazily inside the functions that
need it (the GPU machine has no astropy or FastAPI, and the CPU machine no CuPy).

Modules
-------
constants
    ``MAD_TO_SIGMA``, ``FWHM_PER_SIGMA``.
robust
    Row median and median absolute deviation of the finite values.
linalg
    Batched Cholesky solve of small SPD systems.
views
    ``finite_range`` of an array (NumPy or CuPy), step validation, host copies.
moment_plans
    Spectral-axis plans of the two moment conventions.
gauss2d
    2-D elliptical Gaussian fit (``imfit``) core.
linefit
    Spectral axis, fit constants and the significance rule of the line-width fit.
baseline_model
    Validation, Legendre basis, fallback orders and block fit of the baseline kernels.
imstat
    The scalar ``imstat`` statistics and the combination of their partials.
rawcache
    Per-device cache of compiled CUDA kernels with project-prefixed names; the float32-cube check.
"""
