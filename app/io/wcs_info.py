"""WCS analysis of a FITS image header: sanitising, axis roles and the open-response block.

astropy silently rewrites some spectral axes (``FELO-HEL`` → ``VOPT-F2W``) and
reports each fix as a ``FITSFixedWarning``; we collect those messages for
``wcs_warning_message``. Before astropy sees the header we normalise unit
spellings it misreads (``'KM/S'``, ``'HZ'`` ...). After ``wcs.set()`` every world
value is SI (Hz, m/s, m) whatever ``CUNIT`` said.

Informational fixes (astropy's ``'obsfix'``, ``'datfix'``: observatory location and
dates derived from other keywords) change nothing about pixel ↔ world geometry: they
leave the status ``ok`` and go to ``info_messages``, not to the warning message.

Status values: ``ok`` (used as written), ``sanitized`` (we or astropy changed
or assumed something that matters for coordinates), ``degraded`` (astropy could
not build a WCS; a linear per-axis WCS from CRVAL/CDELT/CRPIX is used instead).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

#: Unit spellings astropy misreads, mapped case-insensitively to FITS-standard ones.
_UNIT_FIXES = {
    "KM/S": "km/s", "KMS": "km/s", "KM/SEC": "km/s", "KMSEC": "km/s",
    "M/S": "m/s", "M/SEC": "m/s", "HZ": "Hz", "KHZ": "kHz", "MHZ": "MHz", "GHZ": "GHz",
    "DEG": "deg", "DEGREE": "deg", "DEGREES": "deg",
}
_VELOCITY_PREFIXES = ("VRAD", "VOPT", "VELO", "FELO", "VELOCITY", "ZOPT", "VREL")
#: astropy fixes that change nothing about pixel ↔ world geometry.
_INFORMATIONAL_FIXES = ("'datfix'", "'obsfix'")


@dataclass
class AxisRoles:
    """Which FITS axes (0-based, FITS order) play x, y and the spectral/third role."""

    x: int
    y: int
    z: int | None
    spectral: bool
    dropped: dict[int, int] = field(default_factory=dict)  # FITS axis -> plane index taken
    notes: list[str] = field(default_factory=list)


@dataclass
class WcsInfo:
    """The sanitised WCS of an image and everything the open response reports about it."""

    wcs: WCS
    status: str
    messages: list[str]
    sanitized_axes: list[int]
    roles: AxisRoles
    header_ctype: list[str]
    #: astropy's informational fixes ('obsfix', 'datfix'): reported apart, never as warnings.
    info_messages: list[str] = field(default_factory=list)

    @cached_property
    def celestial_pixel_area_deg2(self) -> float | None:
        """Solid angle of one pixel in deg², ``|det|`` of the celestial pixel-scale matrix (computed once;
        ``None`` without a celestial WCS or for a degraded one)."""
        try:
            if self.wcs.has_celestial:
                area = abs(float(np.linalg.det(self.wcs.celestial.pixel_scale_matrix)))
                return area if area > 0 else None
        except Exception:  # noqa: BLE001 - a degraded WCS: the caller falls back to CDELT
            return None
        return None

    @property
    def warning_message(self) -> str:
        return "; ".join(self.messages)


def _sanitize_units(header: fits.Header, naxis: int) -> tuple[list[str], list[int]]:
    messages: list[str] = []
    touched: list[int] = []
    for i in range(1, naxis + 1):
        key = f"CUNIT{i}"
        unit = str(header.get(key, "")).strip()
        fixed = _UNIT_FIXES.get(unit.upper())
        if unit and fixed and fixed != unit:
            header[key] = fixed
            messages.append(f"{key} '{unit}' read as '{fixed}'")
            touched.append(i - 1)
        ctype = str(header.get(f"CTYPE{i}", "")).upper()
        if not unit and ctype.startswith(_VELOCITY_PREFIXES):
            messages.append(f"{key} missing for {ctype.strip()}; assumed m/s (FITS standard)")
            touched.append(i - 1)
    return messages, touched


def _linear_wcs(header: fits.Header, naxis: int) -> WCS:
    wcs = WCS(naxis=naxis)
    wcs.wcs.crval = [float(header.get(f"CRVAL{i}", 0.0) or 0.0) for i in range(1, naxis + 1)]
    wcs.wcs.cdelt = [float(header.get(f"CDELT{i}", 1.0) or 1.0) for i in range(1, naxis + 1)]
    wcs.wcs.crpix = [float(header.get(f"CRPIX{i}", 1.0) or 1.0) for i in range(1, naxis + 1)]
    return wcs


def _build(header: fits.Header, naxis: int) -> tuple[WCS, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wcs = WCS(header, naxis=naxis, fix=True)
        wcs.wcs.set()
    return wcs, caught


def _relabel_aips_velocity(header: fits.Header, naxis: int) -> list[str]:
    messages = []
    for i in range(1, naxis + 1):
        ctype = str(header.get(f"CTYPE{i}", "")).strip().upper()
        if ctype.startswith(("FELO", "VELO")):
            new = "VOPT" if ctype.startswith("FELO") else "VRAD"
            header[f"CTYPE{i}"] = new
            messages.append(f"CTYPE{i} '{ctype}' without rest frequency read as linear '{new}'")
    return messages


def _assign_roles(wcs: WCS, shape_fits: tuple[int, ...]) -> AxisRoles:
    naxis = len(shape_fits)
    spec = int(wcs.wcs.spec) if wcs.wcs.spec >= 0 else None
    lng = int(wcs.wcs.lng) if wcs.wcs.lng >= 0 else None
    lat = int(wcs.wcs.lat) if wcs.wcs.lat >= 0 else None
    if lng is not None and lat is not None:
        x, y = lng, lat
    else:
        others = [i for i in range(naxis) if i != spec]
        x, y = others[0], others[1]
    rest = [i for i in range(naxis) if i not in (x, y)]
    z: int | None = None
    if spec is not None and spec not in (x, y):
        z = spec
    else:
        big = [i for i in rest if shape_fits[i] > 1]
        z = big[0] if big else None
    roles = AxisRoles(x=x, y=y, z=z, spectral=(z is not None and z == spec))
    for i in rest:
        if i == z:
            continue
        roles.dropped[i] = 0
        if shape_fits[i] > 1:
            ctype = wcs.wcs.ctype[i] or f"axis {i + 1}"
            roles.notes.append(f"FITS axis {i + 1} ({ctype}, n={shape_fits[i]}) is not degenerate; using plane 0")
    if z is not None and shape_fits[z] == 1:
        roles.dropped[z] = 0
        roles.z = None
        roles.spectral = False
    return roles


def analyse_wcs(header: fits.Header, shape_fits: tuple[int, ...]) -> WcsInfo:
    """Build the sanitised WCS and axis roles for an image HDU.

    Parameters
    ----------
    header
        The image HDU header (not modified).
    shape_fits
        ``(NAXIS1, NAXIS2, ...)`` in FITS order.
    """
    naxis = len(shape_fits)
    work = header.copy()
    header_ctype = [str(header.get(f"CTYPE{i}", "")).strip() for i in range(1, naxis + 1)]
    messages, touched = _sanitize_units(work, naxis)
    info_messages: list[str] = []
    status = "sanitized" if touched else "ok"
    try:
        try:
            wcs, caught = _build(work, naxis)
        except ValueError:
            # AIPS FELO-/VELO- axes need a rest frequency for astropy; without one, read them as
            # linear optical/radio velocity axes (what a viewer would show) and say so.
            relabelled = _relabel_aips_velocity(work, naxis)
            if not relabelled:
                raise
            messages.extend(relabelled)
            touched.extend(int(m.split("CTYPE")[1].split(" ")[0]) - 1 for m in relabelled)
            status = "sanitized"
            wcs, caught = _build(work, naxis)
        for warning in caught:
            if issubclass(warning.category, FITSFixedWarning):
                text = " ".join(str(warning.message).split())
                if text.startswith(_INFORMATIONAL_FIXES):
                    info_messages.append(text)
                    continue
                messages.append(text)
                status = "sanitized"
        for i, (before, after) in enumerate(zip(header_ctype, wcs.wcs.ctype, strict=False)):
            if before and before.upper() != str(after).upper() and i not in touched:
                messages.append(f"CTYPE{i + 1} '{before}' interpreted as '{after}'")
                touched.append(i)
                status = "sanitized"
    except Exception as exc:  # astropy raises many types for broken headers
        messages.append(f"WCS could not be parsed ({type(exc).__name__}: {exc}); using a linear per-axis WCS")
        status = "degraded"
        wcs = _linear_wcs(work, naxis)
        wcs.wcs.set()
    roles = _assign_roles(wcs, shape_fits)
    messages.extend(roles.notes)
    return WcsInfo(wcs, status, messages, sorted(set(touched)), roles, header_ctype, info_messages)


def unit_string(unit: object) -> str:
    """FITS-like spelling of an astropy unit (``m/s``, ``deg``, ``Hz``; ``""`` when dimensionless)."""
    text = str(unit).strip()
    return text.replace(" / ", "/").replace(" ", ".")


def axis_block(info: WcsInfo, shape_fits: tuple[int, ...]) -> dict[str, list]:
    """Per-axis arrays (x, y, z order) for the open response: ctype, cunit, crval, crpix, cdelt, spacing, origin.

    Values come from the sanitised WCS after ``set()`` (SI for spectral axes).
    ``cdelt`` is the diagonal of the pixel-scale matrix (PC/CD folded in);
    ``spacing = cdelt`` and ``origin = crval − cdelt·(crpix − 1)`` (world value of pixel 0 on a linear axis).
    Missing axes (z of an image) default to spacing 1, origin 0, crpix 1, cdelt 1.
    """
    wcs = info.wcs
    scale = np.asarray(wcs.pixel_scale_matrix)
    out: dict[str, list] = {k: [] for k in ("ctype", "cunit", "crval", "crpix", "cdelt", "spacing", "origin")}
    for axis in (info.roles.x, info.roles.y, info.roles.z):
        if axis is None:
            values = ("", "", 0.0, 1.0, 1.0)
        else:
            values = (
                info.header_ctype[axis] or str(wcs.wcs.ctype[axis]),
                unit_string(wcs.wcs.cunit[axis]),
                float(wcs.wcs.crval[axis]),
                float(wcs.wcs.crpix[axis]),
                float(scale[axis, axis]),
            )
        ctype, cunit, crval, crpix, cdelt = values
        out["ctype"].append(ctype)
        out["cunit"].append(cunit)
        out["crval"].append(crval)
        out["crpix"].append(crpix)
        out["cdelt"].append(cdelt)
        out["spacing"].append(cdelt)
        out["origin"].append(crval - cdelt * (crpix - 1.0) if axis is not None else 0.0)
    return out
