"""Cosmological distances (astropy's Planck18, Planck15, Planck13, WMAP9).

A batch goes through a cached per-model interpolation grid: with ``u = ln(1 + z)`` and
``g(u) = D_C(z) / z`` (smooth, ``g(0) = D_H = c/H0``), a cubic spline of ``g`` on
:data:`GRID_POINTS` nodes over ``0 ≤ z ≤`` :data:`GRID_Z_MAX`, filled once from astropy,
gives ``D_C = z·g(u)`` with a relative error far below 1e-6 at every redshift (tiny ones
included: no cancellation near 0). Redshifts beyond the grid go to astropy directly.

- comoving ``D_C`` (the ``distances_Mpc`` of the API, what the desktop client uses);
- transverse comoving ``D_M`` (= ``D_C`` in the flat models; the curved formula otherwise);
- luminosity ``D_L = (1 + z)·D_M``; angular-diameter ``D_A = D_M / (1 + z)``.

Negative or non-finite redshifts are ``NaN`` here (``null`` on the wire) in a batch and an
error for a single value (astropy would answer 0 Mpc for NaN and a negative distance for z < 0).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy import cosmology
from scipy.interpolate import CubicSpline

from app.errors import InvalidRequest

MODELS = ("Planck18", "Planck15", "Planck13", "WMAP9")
KINDS = ("comoving", "luminosity", "angular_diameter")
_KIND_ALIASES = {"comoving": "comoving", "luminosity": "luminosity", "angular_diameter": "angular_diameter",
                 "angular": "angular_diameter", "angular-diameter": "angular_diameter",
                 "angulardiameter": "angular_diameter", "dl": "luminosity", "da": "angular_diameter",
                 "dc": "comoving"}
GRID_POINTS = 3000
GRID_Z_MAX = 1200.0
#: Largest batch accepted.
MAX_BATCH = 1_000_000


def model_of(name: str | None) -> Any:
    """The astropy realisation called ``name`` (case-insensitive; default Planck18)."""
    wanted = (name or "Planck18").strip()
    for model in MODELS:
        if model.lower() == wanted.lower():
            return getattr(cosmology, model)
    raise InvalidRequest(f"Unknown cosmology model '{name}'; valid models: {', '.join(MODELS)}.")


def kind_of(name: str | None) -> str:
    """Normalise a distance kind (default ``comoving``)."""
    key = (name or "comoving").strip().lower().replace(" ", "_")
    if key.endswith("_distance"):
        key = key.removesuffix("_distance")
    kind = _KIND_ALIASES.get(key)
    if kind is None:
        raise InvalidRequest(f"Unknown distance kind '{name}'; use one of {', '.join(KINDS)}.")
    return kind


@dataclass(frozen=True)
class DistanceGrid:
    """The spline of ``g(u) = D_C/z`` (Mpc) of one model over ``u = ln(1 + z)``."""

    model: Any
    spline: CubicSpline
    z_max: float

    @classmethod
    def build(cls, model: Any, *, points: int = GRID_POINTS, z_max: float = GRID_Z_MAX) -> DistanceGrid:
        u = np.linspace(0.0, math.log1p(z_max), points)
        z = np.expm1(u)
        g = np.empty(points)
        g[0] = model.hubble_distance.to_value("Mpc")
        g[1:] = model.comoving_distance(z[1:]).to_value("Mpc") / z[1:]
        return cls(model, CubicSpline(u, g), z_max)

    def comoving(self, z: np.ndarray) -> np.ndarray:
        """``D_C`` in Mpc for finite ``z ≥ 0`` (float64 array in, same shape out)."""
        out = np.empty_like(z, dtype=np.float64)
        inside = z <= self.z_max
        zi = z[inside]
        out[inside] = zi * self.spline(np.log1p(zi))
        if not inside.all():
            out[~inside] = self.model.comoving_distance(z[~inside]).to_value("Mpc")
        return out


_GRIDS: dict[str, DistanceGrid] = {}
_GRID_LOCK = threading.Lock()


def grid_for(model: Any) -> DistanceGrid:
    """The cached grid of a model (built on first use, ~0.1 s)."""
    with _GRID_LOCK:
        grid = _GRIDS.get(model.name)
        if grid is None:
            grid = _GRIDS[model.name] = DistanceGrid.build(model)
        return grid


def transverse(model: Any, z: np.ndarray, d_c: np.ndarray) -> np.ndarray:
    """Transverse comoving distance ``D_M`` from ``D_C`` (identical in a flat model)."""
    ok0 = float(model.Ok0)
    if ok0 == 0.0:
        return d_c
    d_h = model.hubble_distance.to_value("Mpc")
    s = math.sqrt(abs(ok0))
    return d_h / s * (np.sinh(s * d_c / d_h) if ok0 > 0 else np.sin(s * d_c / d_h))


def distances(model: Any, z: np.ndarray, kind: str) -> np.ndarray:
    """Distances (Mpc) of ``kind`` for finite ``z ≥ 0``, through the grid."""
    d_c = grid_for(model).comoving(z)
    if kind == "comoving":
        return d_c
    d_m = transverse(model, z, d_c)
    return d_m * (1.0 + z) if kind == "luminosity" else d_m / (1.0 + z)


def batch(redshifts: Sequence[float | None], *, model_name: str | None, kinds: Sequence[str] = ()) -> dict[str, Any]:
    """Comoving distances (``distances_Mpc``) in input order, plus ``<kind>_distances_Mpc`` when asked.

    Returns arrays with NaN where the redshift was negative, non-finite or missing.
    """
    model = model_of(model_name)
    if len(redshifts) > MAX_BATCH:
        raise InvalidRequest(f"Too many redshifts ({len(redshifts)}); at most {MAX_BATCH} per batch.")
    z = np.array(redshifts, dtype=np.float64)  # None → NaN
    valid = np.isfinite(z) & (z >= 0)
    out: dict[str, Any] = {"model": model.name, "count": int(z.size), "invalid_count": int(z.size - valid.sum())}
    for kind in dict.fromkeys(["comoving", *kinds]):
        values = np.full(z.shape, np.nan)
        values[valid] = distances(model, z[valid], kind)
        out["distances_Mpc" if kind == "comoving" else f"{kind}_distances_Mpc"] = values
    return out


def single(redshift: float | None, *, model_name: str | None) -> dict[str, Any]:
    """All three distances of one redshift, straight from astropy.

    Raises
    ------
    InvalidRequest
        Missing, non-finite or negative redshift; unknown model.
    """
    model = model_of(model_name)
    if redshift is None or not math.isfinite(redshift):
        raise InvalidRequest("Redshift must be a finite number.")
    if redshift < 0:
        raise InvalidRequest("Redshift z must be >= 0")
    d_c = float(model.comoving_distance(redshift).to_value("Mpc"))
    return {
        "model": model.name, "redshift": redshift, "distance_Mpc": d_c, "comoving_distance_Mpc": d_c,
        "luminosity_distance_Mpc": float(model.luminosity_distance(redshift).to_value("Mpc")),
        "angular_diameter_distance_Mpc": float(model.angular_diameter_distance(redshift).to_value("Mpc")),
        "unit": "Mpc",
    }
