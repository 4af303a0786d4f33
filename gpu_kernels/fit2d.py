"""2-D elliptical Gaussian fitting (``imfit``) on the GPU: the batched Levenberg–Marquardt of
the shared :mod:`kernel_common.gauss2d` core run with CuPy as the array namespace.

Same public functions and signatures as the reference. The reference's implementation is
written against an array namespace ``xp``; this tree passes ``cupy``, so the model, the
analytic Jacobian, the chunked normal equations ``JᵀJ``/``Jᵀr`` (batched ``matmul``) and the
batched solves run on the device, and the two trees follow the same algorithm step for step
(guide §1.7: reuse before rewrite). Host syncs: the convergence test once per iteration and
the scalar moments of the initial estimate (``# sync`` in the shared code).
"""

from __future__ import annotations

from typing import Any

from app.compute.contract import Case, Tolerance
from kernel_common import gauss2d

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-6, atol=1e-9)
#: Start parameters of the self-test fit (two Gaussians on the self-test plane).
FIT_START = (2.0, 9.0, 10.0, 2.0, 3.0, 0.1, 0.8, 34.0, 15.0, 1.5, 2.0, 0.0)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (
    Case("estimate_gaussians", ("plane",), {"n_components": 2}),
    Case("fit_gaussians", ("planes",), {"p0": FIT_START, "n_components": 2, "max_iter": 50}, view="fit_result"),
)

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any


def estimate_gaussians(image: _Array, mask: _Array | None = None, *, n_components: int = 1,
                       background: bool = False, window: int = 32) -> _Array:
    """Initial parameters ``(6·K [+1],)`` float64 on the device (see :func:`cpu_fallback.fit2d.estimate_gaussians`)."""
    import cupy as cp

    return gauss2d.estimate(cp, image, mask, n_components=n_components, background=background, window=window)


def gaussian_model(params: _Array, *, shape: tuple[int, int], n_components: int, background: bool) -> _Array:
    """Model planes ``(B, ny, nx)`` float64 on the device (see :func:`cpu_fallback.fit2d.gaussian_model`)."""
    import cupy as cp

    return gauss2d.model(cp, params, shape=shape, n_components=n_components, background=background)


def fit_gaussians(images: _Array, p0: _Array, mask: _Array | None = None, *, n_components: int = 1,
                  background: bool = False, max_iter: int = 200, tol: float = 1e-10) -> dict[str, _Array]:
    """Batched Levenberg–Marquardt fit on the device (see :func:`cpu_fallback.fit2d.fit_gaussians`).

    Returns
    -------
    dict
        ``params``, ``errors`` ``(B, P)``, ``chi2``, ``npix``, ``iterations``, ``converged`` ``(B,)``,
        CuPy arrays.
    """
    import cupy as cp

    return gauss2d.fit(cp, images, p0, mask, n_components=n_components, background=background,
                       max_iter=max_iter, tol=tol)
