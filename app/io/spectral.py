"""Spectral axis coordinates from a sanitised WCS.

After ``wcs.set()`` astropy gives world values in SI (m/s, Hz, m). We report
velocity axes in km/s; frequency axes stay in Hz unless a rest frequency is given,
in which case they become radio velocity ``v = c·(1 − ν/ν₀)`` in km/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.io.wcs_info import WcsInfo

C_KM_S = 299792.458
_VELOCITY = ("VRAD", "VOPT", "VELO", "FELO", "VREL", "VELOCITY")
_FREQUENCY = ("FREQ",)
_WAVELENGTH = ("WAVE", "AWAV")


@dataclass
class SpectralAxis:
    """Per-channel coordinates and widths of the cube's third axis.

    Attributes
    ----------
    coords
        (nz,) float64 channel centres in ``unit``.
    widths
        (nz,) float64 absolute channel widths: cells whose edges are the midpoints
        between neighbouring centres (a single channel gets width 1).
    unit
        ``km/s``, ``Hz``, ``m`` or ``channel``.
    ctype
        Header CTYPE of the axis (``""`` when the cube has no third axis).
    kind
        ``velocity``, ``frequency``, ``wavelength`` or ``channel``.
    """

    coords: np.ndarray
    widths: np.ndarray
    unit: str
    ctype: str
    kind: str


def channel_widths(coords: np.ndarray) -> np.ndarray:
    """|Δv| per channel from the midpoints between neighbouring centres (1 for a single channel)."""
    n = coords.size
    if n == 1:
        return np.ones(1)
    edges = np.empty(n + 1)
    edges[1:-1] = 0.5 * (coords[1:] + coords[:-1])
    edges[0] = coords[0] - (edges[1] - coords[0])
    edges[-1] = coords[-1] + (coords[-1] - edges[-2])
    return np.abs(np.diff(edges))


def spectral_axis(info: WcsInfo, nz: int, *, rest_freq_hz: float | None = None) -> SpectralAxis:
    """Channel coordinates of the cube's third axis, in the units users expect."""
    z = info.roles.z
    if z is None:
        coords = np.arange(nz, dtype=np.float64)
        return SpectralAxis(coords, channel_widths(coords), "channel", "", "channel")
    ctype = info.header_ctype[z] or str(info.wcs.wcs.ctype[z])
    upper = ctype.upper()
    try:
        sub = info.wcs.sub([z + 1])
        world = np.asarray(sub.pixel_to_world_values(np.arange(nz, dtype=np.float64)), dtype=np.float64)
        unit_si = str(sub.wcs.cunit[0])
    except Exception:
        world, unit_si = np.arange(nz, dtype=np.float64), ""
    if not info.roles.spectral or not np.all(np.isfinite(world)):
        coords = np.arange(nz, dtype=np.float64)
        return SpectralAxis(coords, channel_widths(coords), unit_si or "channel", ctype, "channel")
    if upper.startswith(_VELOCITY) or unit_si == "m/s":
        coords = world / 1000.0
        return SpectralAxis(coords, channel_widths(coords), "km/s", ctype, "velocity")
    if upper.startswith(_FREQUENCY) or unit_si == "Hz":
        if rest_freq_hz and rest_freq_hz > 0:
            coords = C_KM_S * (1.0 - world / rest_freq_hz)
            return SpectralAxis(coords, channel_widths(coords), "km/s", ctype, "velocity")
        return SpectralAxis(world, channel_widths(world), "Hz", ctype, "frequency")
    if upper.startswith(_WAVELENGTH):
        return SpectralAxis(world, channel_widths(world), "m", ctype, "wavelength")
    return SpectralAxis(world, channel_widths(world), unit_si or "", ctype, "other")
