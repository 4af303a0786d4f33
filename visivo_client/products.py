"""Turning product answers into astropy objects: FITS maps, PV diagrams, tables and meshes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from visivo_client.codec import decode_array

#: Answer fields never copied into table metadata (payloads).
_PAYLOADS = ("data_base64", "fwhm_base64", "ew_base64", "positions_base64", "positions_arcsec_base64",
             "spectra_base64", "points_base64", "polys_base64")


def metadata(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without its base64 payloads."""
    return {k: v for k, v in answer.items() if k not in _PAYLOADS}


def header_from_cards(cards: list[str]) -> fits.Header:
    """A FITS header from the 80-character cards ``/v1/files/header`` answers."""
    return fits.Header.fromstring("\n".join(cards), sep="\n")


def quiet_wcs(header: fits.Header | dict, **kwargs: Any) -> WCS:
    """``WCS(header)`` without the ``FITSFixedWarning`` astropy emits for the fixes it applies."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, **kwargs)


def _beam_cards(header: fits.Header, answer: dict[str, Any]) -> None:
    """BMAJ/BMIN (deg) and BPA (deg) from an answer's beam in arcsec."""
    if answer.get("beam_major") and answer.get("beam_minor"):
        header["BMAJ"] = (answer["beam_major"] / 3600.0, "[deg] beam major axis")
        header["BMIN"] = (answer["beam_minor"] / 3600.0, "[deg] beam minor axis")
        header["BPA"] = (answer.get("beam_pa") or 0.0, "[deg] beam position angle")


def map_hdu(data: np.ndarray, *, celestial: WCS | None, bunit: str, history: list[str],
            beam: dict[str, Any] | None = None, header: fits.Header | None = None) -> fits.PrimaryHDU:
    """A 2-D map as a PrimaryHDU.

    With ``header`` (the header the server wrote with the product) it is used as is; otherwise
    the header is the dataset's 2-D celestial WCS, ``BUNIT``, the beam and ``HISTORY`` lines made
    from the parameters the server reported.
    """
    if header is None:
        header = celestial.to_header() if celestial is not None else fits.Header()
        header["BUNIT"] = bunit
        _beam_cards(header, beam or {})
        for line in history:
            header.add_history(line)
    return fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header)


def pv_hdu(answer: dict[str, Any], source: str) -> fits.PrimaryHDU:
    """A PV diagram: rows = channels (FITS axis 2, spectral), columns = positions (axis 1, offset in arcsec).

    The offset axis is linear, ``CRVAL1`` = first sample offset and ``CDELT1`` = mean sample step
    (exact for a single segment, whose samples are equally spaced; a polyline's segments may have
    slightly different steps, which HISTORY notes). With ``spatial_bin`` > 1 the step is that of the
    full bins (a last, partial bin's centre is nearer; HISTORY says where). The spectral axis is linear in the server's
    ``spectral_values`` (km/s for velocity axes).
    """
    nz, ns = int(answer["rows"]), int(answer["cols"])
    comp = answer.get("compression")
    data = decode_array(answer["data_base64"], comp, shape=(nz, ns))
    offsets = decode_array(answer["positions_arcsec_base64"], comp).astype(np.float64)
    spectral = np.asarray(answer.get("spectral_values") or np.arange(nz), dtype=np.float64)
    header = fits.Header()
    header["CTYPE1"], header["CUNIT1"], header["CRPIX1"] = "OFFSET", "arcsec", 1.0
    header["CRVAL1"] = float(offsets[0]) if ns else 0.0
    full = ns - 1 if int(answer.get("spatial_bin") or 1) > 1 and ns > 2 else ns  # a last partial bin is off-grid
    header["CDELT1"] = float((offsets[full - 1] - offsets[0]) / (full - 1)) if full > 1 else 1.0
    header["CTYPE2"] = answer.get("spectral_axis_type") or "CHANNEL"
    header["CUNIT2"] = answer.get("spectral_axis_unit") or ""
    header["CRPIX2"], header["CRVAL2"] = 1.0, float(spectral[0]) if nz else 0.0
    header["CDELT2"] = float(spectral[1] - spectral[0]) if nz > 1 else 1.0
    header["BUNIT"] = answer.get("bunit") or ""
    _beam_cards(header, answer)
    header.add_history(f"visivo-gpu-server pv width={answer.get('width_pixels')} px, {answer.get('sampling')}")
    header.add_history(f"vertices (0-based px)={answer.get('vertices_px')}")
    header.add_history(f"length={answer.get('total_length_arcsec')} arcsec source={source}")
    if full < ns:
        header.add_history(f"spatial_bin={answer.get('spatial_bin')}: CDELT1 from the full bins; the last bin "
                           f"may be partial (its centre {float(offsets[-1]):.6g} arcsec)")
    steps = np.diff(offsets[:full])
    if steps.size and np.ptp(steps) > 1e-3 * abs(header["CDELT1"]):
        header.add_history("offset steps differ between segments: CDELT1 is their mean")
    return fits.PrimaryHDU(data, header=header)


def spectrum_table(answer: dict[str, Any]) -> Table:
    """The stacked spectrum (``rows = 1, cols = channels``) as a table: ``spectral`` and ``flux``."""
    flux = decode_array(answer["data_base64"], answer.get("compression"))
    table = Table(meta=metadata(answer))
    values = answer.get("spectral_values")
    table["spectral"] = np.asarray(values if values is not None else np.arange(flux.size), dtype=np.float64)
    table["spectral"].unit = answer.get("spectral_axis_unit") or None
    table["flux"] = flux
    table["flux"].unit = answer.get("bunit") or None
    return table


def noise_table(answer: dict[str, Any], unit: str | None) -> Table:
    """Per-channel noise: ``channel``, ``mad``, ``sigma`` (= 1.4826·MAD), ``median``; NaN where the server sent null."""
    c0 = int(answer["channel_start"])
    n = int(answer["num_channels"])
    table = Table(meta=metadata({k: v for k, v in answer.items() if k not in ("mad", "sigma", "median")}))
    table["channel"] = np.arange(c0, c0 + n)
    for name in ("mad", "sigma", "median"):
        values = answer.get(name) or [None] * n
        table[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        table[name].unit = unit or None
    return table


@dataclass
class Mesh:
    """An isosurface mesh in voxel coordinates of the full cube.

    Attributes
    ----------
    points : numpy.ndarray
        ``(n_points, 3)`` float32 vertex positions ``x, y, z`` (0-based voxel indices).
    triangles : numpy.ndarray
        ``(n_triangles, 3)`` int32 vertex indices (the wire's VTK ``3, i, j, k`` without the 3).
    bounds : list of float
        ``xmin, xmax, ymin, ymax, zmin, zmax`` as the server reports them.
    info : dict
        The rest of the server's answer (threshold, step, computed_on, ...).
    """

    points: np.ndarray
    triangles: np.ndarray
    bounds: list[float]
    info: dict[str, Any] = field(default_factory=dict)


def mesh(answer: dict[str, Any]) -> Mesh:
    comp = answer.get("compression")
    points = decode_array(answer["points_base64"], comp).reshape(-1, 3)
    polys = decode_array(answer["polys_base64"], comp, dtype="<i4").reshape(-1, 4)
    if polys.size and not np.all(polys[:, 0] == 3):
        raise ValueError("isosurface polygons are not all triangles")
    return Mesh(points=points, triangles=np.ascontiguousarray(polys[:, 1:]), bounds=list(answer["bounds"]),
                info=metadata(answer))
