"""Opening FITS images and cubes as datasets, and the metadata the open call returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astropy.io import fits

from app.io.fits_reader import FitsImage, open_fits_image
from app.io.paths import confine
from app.io.wcs_info import axis_block, unit_string
from app.services.sessions import Dataset, SessionRegistry, new_dataset_id


def _rest_frequency(header: fits.Header) -> float | None:
    for key in ("RESTFRQ", "RESTFREQ"):
        value = header.get(key)
        try:
            freq = float(value)
        except (TypeError, ValueError):
            continue
        if freq > 0:
            return freq
    return None


def beam_of(header: fits.Header) -> dict[str, float | None]:
    """Restoring beam from BMAJ/BMIN (deg → arcsec) and BPA (deg); ``None`` when absent."""

    def number(key: str) -> float | None:
        try:
            return float(header[key])
        except (KeyError, TypeError, ValueError):
            return None

    bmaj, bmin, bpa = number("BMAJ"), number("BMIN"), number("BPA")
    return {
        "major": bmaj * 3600.0 if bmaj is not None else None,
        "minor": bmin * 3600.0 if bmin is not None else None,
        "pa": bpa,
    }


def image_metadata(image: FitsImage) -> dict[str, Any]:
    """The geometry, units, beam and WCS block of an opened FITS image (open-response fields)."""
    info = image.wcs_info
    header = image.header
    depth, height, width = image.source.shape
    shape_fits = tuple(int(n) for n in image.source.raw.shape[::-1])
    kind = "cube" if depth > 1 or info.roles.z is not None else "image"
    block = axis_block(info, shape_fits)
    beam = beam_of(header)
    z = info.roles.z
    roles = [info.roles.x, info.roles.y, info.roles.z]
    degenerate = [
        f"axis {a + 1} ({info.header_ctype[a] or '?'}) n={shape_fits[a]} plane {p}"
        for a, p in sorted(info.roles.dropped.items())
    ]
    return {
        "kind": kind,
        "active_axes": 3 if kind == "cube" else 2,
        "width": width,
        "height": height,
        "depth": depth,
        "naxis": len(shape_fits),
        "fits_shape": list(shape_fits),
        "hdu_index": image.hdu_index,
        "degenerate_axes_summary": "; ".join(degenerate),
        "bunit": str(header.get("BUNIT", "")).strip(),
        "beam": {**beam, "unit": "arcsec", "pa_unit": "deg"},
        "beam_major": beam["major"],
        "beam_minor": beam["minor"],
        "beam_pa": beam["pa"],
        "rest_freq_hz": _rest_frequency(header),
        "spectral_axis_type": (info.header_ctype[z] if z is not None else ""),
        "spectral_axis_unit": (unit_string(info.wcs.wcs.cunit[z]) if z is not None else ""),
        "wcs_status": info.status,
        "wcs_warning_message": info.warning_message,
        "wcs_info_message": "; ".join(info.info_messages),
        # indices into the x, y, z per-axis arrays below
        "wcs_sanitized_axes": [roles.index(a) for a in info.sanitized_axes if a in roles],
        "file_size_bytes": image.path.stat().st_size,
        "compressed": image.compressed,
        **block,
    }


def open_dataset(registry: SessionRegistry, roots: tuple[Path, ...], raw_path: str, session_id: str | None) -> Dataset:
    """Open a FITS file inside the data roots and register it in the (possibly new) session."""
    path = confine(raw_path, roots)
    image = open_fits_image(path)
    try:
        meta = image_metadata(image)
    except Exception:
        image.close()
        raise
    session = registry.ensure(session_id)
    dataset = Dataset(new_dataset_id(), session.session_id, path, meta["kind"], image, meta)
    return registry.add_dataset(session, dataset)


def open_answer(dataset: Dataset) -> dict[str, Any]:
    """The payload of an open call (and of ``GET /v1/datasets/{id}``): metadata, ids and path."""
    return {**dataset.info, "dataset_id": dataset.dataset_id, "session_id": dataset.session_id,
            "path": str(dataset.path)}


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    """The per-dataset row of ``GET /v1/sessions/{id}/datasets``."""
    info = dataset.info
    return {
        "dataset_id": dataset.dataset_id,
        "kind": dataset.kind,
        "path": str(dataset.path),
        "width": info.get("width", 0),
        "height": info.get("height", 0),
        "depth": info.get("depth", 0),
    }
