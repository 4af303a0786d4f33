"""Spectral axis coordinates from a sanitised WCS.

After ``wcs.set()`` astropy gives world values in SI (m/s, Hz, m). We report
velocity axes in km/s. A frequency or wavelength axis (FREQ, WAVE, AWAV) becomes a
velocity axis in km/s whenever a rest frequency ν₀ is known — the request's
``rest_freq_hz`` wins over the header's RESTFRQ/RESTFREQ — as CASA immoments and
CARTA do; without one it stays in Hz (or m). With ``r = ν/ν₀`` (wavelengths are
turned into vacuum frequencies by wcslib first):

* ``radio`` (default): ``v = c·(1 − r)``
* ``optical``: ``v = c·(1/r − 1)``
* ``relativistic``: ``v = c·(1 − r²)/(1 + r²)``

A native velocity axis (VRAD radio, VOPT/FELO optical, VELO/VREL relativistic) keeps
its own convention unless the request names another one; it is then converted
through ``r`` (radio ``r = 1 − v/c``, optical ``r = 1/(1 + v/c)``, relativistic
``r = √((1 − β)/(1 + β))``), which needs no rest frequency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.errors import InvalidRequest
from app.io.wcs_info import WcsInfo

C_KM_S = 299792.458
C_M_S = 299792458.0
VELOCITY_CONVENTIONS = ("radio", "optical", "relativistic")
#: Native convention of a velocity CTYPE prefix.
_NATIVE = {"VRAD": "radio", "VOPT": "optical", "FELO": "optical", "VELO": "relativistic", "VREL": "relativistic"}
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
    velocity_convention: str | None = None
    rest_freq_hz: float | None = None
    rest_freq_source: str | None = None

    def describe(self) -> dict[str, object]:
        """The response echo: unit, kind, velocity convention and the rest frequency used (and whence)."""
        return {"spectral_axis_unit": self.unit, "spectral_axis_kind": self.kind,
                "velocity_convention": self.velocity_convention, "rest_freq_hz": self.rest_freq_hz,
                "rest_freq_source": self.rest_freq_source}


def check_velocity_convention(name: str | None) -> str | None:
    """``None`` or one of :data:`VELOCITY_CONVENTIONS` (case-insensitive); else :class:`InvalidRequest`."""
    if name is None:
        return None
    text = str(name).strip().lower()
    if text not in VELOCITY_CONVENTIONS:
        raise InvalidRequest(f"velocity_convention must be one of {', '.join(VELOCITY_CONVENTIONS)}; got '{name}'.")
    return text


def check_rest_frequency(rest_freq_hz: float | None) -> float | None:
    """``None`` or a finite positive frequency in Hz; else :class:`InvalidRequest`."""
    if rest_freq_hz is None:
        return None
    value = float(rest_freq_hz)
    if not (np.isfinite(value) and value > 0):
        raise InvalidRequest("rest_freq_hz must be a positive frequency in Hz.")
    return value


def velocity_options(body: object) -> dict[str, object]:
    """``rest_freq_hz`` and ``velocity_convention`` of a request model, validated (for cache keys and services)."""
    return {"rest_freq_hz": check_rest_frequency(getattr(body, "rest_freq_hz", None)),
            "velocity_convention": check_velocity_convention(getattr(body, "velocity_convention", None))}


def velocity_from_ratio(ratio: np.ndarray, convention: str) -> np.ndarray:
    """Velocity in km/s from ``r = ν/ν₀`` in the given convention (see the module docstring)."""
    r = np.asarray(ratio, dtype=np.float64)
    if convention == "radio":
        return C_KM_S * (1.0 - r)
    if convention == "optical":
        return C_KM_S * (1.0 / r - 1.0)
    return C_KM_S * (1.0 - r * r) / (1.0 + r * r)


def ratio_from_velocity(velocity_km_s: np.ndarray, convention: str) -> np.ndarray:
    """``r = ν/ν₀`` from a velocity in km/s in the given convention (inverse of :func:`velocity_from_ratio`)."""
    beta = np.asarray(velocity_km_s, dtype=np.float64) / C_KM_S
    if convention == "radio":
        return 1.0 - beta
    if convention == "optical":
        return 1.0 / (1.0 + beta)
    return np.sqrt((1.0 - beta) / (1.0 + beta))


def header_rest_frequency(info: WcsInfo) -> float | None:
    """The header's rest frequency (RESTFRQ, or legacy RESTFREQ, as wcslib read it) in Hz, or ``None``."""
    try:
        value = float(info.wcs.wcs.restfrq)
    except (AttributeError, TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _frequencies(sub, world: np.ndarray, upper: str, nz: int) -> np.ndarray:
    """Vacuum frequencies (Hz) of a FREQ, WAVE or AWAV axis (wcslib's spectral translation for wavelengths)."""
    if upper.startswith(_FREQUENCY):
        return world
    translated = sub.deepcopy()
    translated.wcs.sptr("FREQ-???")
    translated.wcs.set()
    return np.asarray(translated.pixel_to_world_values(np.arange(nz, dtype=np.float64)), dtype=np.float64)


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


def spectral_axis(info: WcsInfo, nz: int, *, rest_freq_hz: float | None = None,
                  velocity_convention: str | None = None) -> SpectralAxis:
    """Channel coordinates of the cube's third axis, in the units users expect.

    Parameters
    ----------
    info
        The sanitised WCS.
    nz
        Number of channels.
    rest_freq_hz
        Rest frequency ν₀ in Hz; overrides the header's RESTFRQ/RESTFREQ.
    velocity_convention
        ``radio`` | ``optical`` | ``relativistic``; ``None``: radio for frequency and wavelength
        axes, the native convention for velocity axes.
    """
    convention = check_velocity_convention(velocity_convention)
    requested = check_rest_frequency(rest_freq_hz)
    from_header = header_rest_frequency(info)
    rest = requested or from_header
    source = "request" if requested else ("header" if from_header else None)
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
        native = next((c for prefix, c in _NATIVE.items() if upper.startswith(prefix)), None)
        coords = world / 1000.0
        used = native
        if convention and native and convention != native:
            coords = velocity_from_ratio(ratio_from_velocity(coords, native), convention)
            used = convention
        return SpectralAxis(coords, channel_widths(coords), "km/s", ctype, "velocity", used, rest, source)
    is_frequency = upper.startswith(_FREQUENCY) or unit_si == "Hz"
    is_wavelength = upper.startswith(_WAVELENGTH)
    if (is_frequency or is_wavelength) and rest:
        try:
            freq = _frequencies(sub, world, "FREQ" if is_frequency else upper, nz)
        except Exception as exc:  # wcslib could not translate this axis
            raise InvalidRequest(f"Cannot convert the {ctype} axis to velocity: {exc}") from None
        used = convention or "radio"
        coords = velocity_from_ratio(freq / rest, used)
        return SpectralAxis(coords, channel_widths(coords), "km/s", ctype, "velocity", used, rest, source)
    if is_frequency:
        return SpectralAxis(world, channel_widths(world), "Hz", ctype, "frequency")
    if is_wavelength:
        return SpectralAxis(world, channel_widths(world), "m", ctype, "wavelength")
    return SpectralAxis(world, channel_widths(world), unit_si or "", ctype, "other")
