"""Issue-17 products as astropy objects: several moment maps (and σ maps) as one HDUList, region
spectra, region statistics and region noise as tables."""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from visivo_client.codec import decode_array
from visivo_client.products import map_hdu, metadata

#: Statistics columns of :func:`region_stats_table` (CASA imstat keys), in the answer's order.
STAT_KEYS = ("npts", "sum", "sumsq", "mean", "sigma", "rms", "min", "max", "median", "medabsdevmed", "q1", "q3",
             "quartile")


def _floats(values: list[Any] | None, n: int) -> np.ndarray:
    """JSON numbers with ``null`` → float64 with NaN."""
    return np.array([np.nan if v is None else v for v in (values or [None] * n)], dtype=np.float64)


def _tag(order: int) -> str:
    """``MOM<k>`` / ``SIG<k>`` suffix as the server names its extensions (``M1`` for CASA's −1)."""
    return f"M{-order}" if order < 0 else str(order)


def moments_hdulist(answer: dict[str, Any], *, celestial: WCS | None, beam: dict[str, Any], history: list[str],
                    ) -> fits.HDUList:
    """An empty primary HDU (``HISTORY`` provenance) and an ImageHDU per map ``MOM<k>`` plus ``SIG<k>`` per σ map.

    Each extension has the dataset's 2-D celestial WCS, ``BUNIT`` (the order's unit; σ maps share it) and
    the beam, like the multi-extension FITS the server saves.
    """
    shape = (int(answer["height"]), int(answer["width"])) if "height" in answer else None
    primary = fits.PrimaryHDU()
    for line in history:
        primary.header.add_history(line)
    hdus: list[Any] = [primary]
    for entry in answer["maps"]:
        order = int(entry["order"])
        data = decode_array(entry["data_base64"], answer.get("compression"), shape=shape)
        if shape is None:  # pragma: no cover - every moment answer names its size
            raise ValueError("moment answer without width/height")
        unit = entry.get("moment_unit") or ""
        line = f"order {order} ({entry.get('moment_name')}), range {entry.get('range_min')} .. {entry.get('range_max')}"
        hdu = map_hdu(data, celestial=celestial, bunit=unit, history=[line], beam=beam)
        hdus.append(fits.ImageHDU(hdu.data, header=hdu.header, name=f"MOM{_tag(order)}"))
        if entry.get("sigma_base64"):
            sigma = decode_array(entry["sigma_base64"], answer.get("compression"), shape=shape)
            sig = map_hdu(sigma, celestial=celestial, bunit=unit, beam=beam, history=[
                f"1-sigma propagated error of order {order} (bettermoments, Teague 2019 RNAAS 3 173)",
                f"noise {answer.get('noise_source')}"])
            hdus.append(fits.ImageHDU(sig.data, header=sig.header, name=f"SIG{_tag(order)}"))
    out = fits.HDUList(hdus)
    out.meta = {k: v for k, v in metadata(answer).items() if k != "maps"}  # type: ignore[attr-defined]
    out.meta["maps"] = [{k: v for k, v in m.items() if not k.endswith("_base64")} for m in answer["maps"]]
    return out


def linefit_hdulist(answer: dict[str, Any], *, celestial: WCS | None, beam: dict[str, Any], history: list[str],
                    ) -> fits.HDUList:
    """An empty primary HDU (``HISTORY``) and an ImageHDU per line-fit map and component.

    Parameter maps (``[components, height, width]``) give one extension per component (``EXTVER``);
    ``reduced_chi2`` and ``ncomp`` one each. Every extension has the 2-D celestial WCS and ``BUNIT``.
    """
    primary = fits.PrimaryHDU()
    for line in history:
        primary.header.add_history(line)
    hdus: list[Any] = [primary]
    for name, entry in answer["maps"].items():
        shape = tuple(int(n) for n in entry["shape"])
        data = decode_array(entry["data_base64"], answer.get("compression"), shape=shape)
        planes = data if len(shape) == 3 else data[None]
        for k, plane in enumerate(planes, start=1):
            hdu = map_hdu(np.ascontiguousarray(plane), celestial=celestial, bunit=entry.get("unit") or "",
                          history=[f"{name} component {k}"], beam=beam)
            ext = fits.ImageHDU(hdu.data, header=hdu.header, name=name.upper())
            ext.header["EXTVER"] = k
            hdus.append(ext)
    out = fits.HDUList(hdus)
    out.meta = {k: v for k, v in metadata(answer).items() if k != "maps"}  # type: ignore[attr-defined]
    out.meta["maps"] = {k: {f: v for f, v in m.items() if f != "data_base64"} for k, m in answer["maps"].items()}
    return out


def region_spectra_tables(answer: dict[str, Any]) -> list[Table]:
    """One table per region: ``channel``, ``spectral`` (unit), ``sum``, ``mean`` (NaN where null), ``count``;
    ``meta``: ``index``, ``shape``, ``num_pixels``, ``bbox`` and the answer's common fields."""
    c0, n = int(answer["channel_start"]), int(answer["num_channels"])
    common = {k: v for k, v in answer.items() if k not in ("spectra", "spectral_values")}
    tables = []
    for spec in answer["spectra"]:
        table = Table(meta={**common, **{k: spec[k] for k in ("index", "shape", "num_pixels", "bbox")}})
        table["channel"] = np.arange(c0, c0 + n)
        table["spectral"] = np.asarray(answer["spectral_values"], dtype=np.float64)
        table["spectral"].unit = answer.get("spectral_axis_unit") or None
        for name in ("sum", "mean"):
            table[name] = _floats(spec[name], n)
            table[name].unit = answer.get("bunit") or None
        table["count"] = np.asarray(spec["count"], dtype=np.int64)
        tables.append(table)
    return tables


def region_stats_table(answer: dict[str, Any]) -> Table:
    """One row per region: ``index, shape, num_pixels, x0, x1, y0, y1`` and the CASA imstat keys, ``minpos``/
    ``maxpos`` as ``(x, y, channel)`` (``-1`` for a region without finite voxels); NaN where the server sent null."""
    rows = answer["regions"]
    table = Table(meta={k: v for k, v in answer.items() if k != "regions"})
    table["index"] = [int(r["index"]) for r in rows]
    table["shape"] = [r["shape"] for r in rows]
    table["num_pixels"] = [int(r["num_pixels"]) for r in rows]
    for key in ("x0", "x1", "y0", "y1"):
        table[key] = [int(r["bbox"][key]) for r in rows]
    for key in STAT_KEYS:
        table[key] = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=np.float64)
        if key not in ("npts", "sumsq"):
            table[key].unit = answer.get("bunit") or None
    table["npts"] = table["npts"].astype(np.int64)
    for key in ("minpos", "maxpos"):
        table[key] = np.array([r[key] if r[key] is not None else [-1, -1, -1] for r in rows], dtype=np.int64)
    return table


def region_noise_tables(answer: dict[str, Any], unit: str | None) -> list[Table]:
    """One table per region: ``channel``, ``median``, ``mad``, ``sigma`` (NaN where null), ``count``; ``meta``:
    ``index, shape, num_pixels, bbox, blank_fraction``."""
    c0, n = int(answer["channel_start"]), int(answer["num_channels"])
    tables = []
    for region in answer["regions"]:
        table = Table(meta={k: region[k] for k in ("index", "shape", "num_pixels", "bbox", "blank_fraction")})
        table["channel"] = np.arange(c0, c0 + n)
        for name in ("median", "mad", "sigma"):
            table[name] = _floats(region[name], n)
            table[name].unit = unit or None
        table["count"] = np.asarray(region["count"], dtype=np.int64)
        tables.append(table)
    return tables
