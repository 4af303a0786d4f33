"""Catalogue sources inside a HiPS viewport (``/v1/hips/catalogue_overlay``).

Sources come from a catalogue file inside the data roots (CSV, TSV, VOTable, FITS table, IPAC) or
from an open catalogue dataset of the caller's session (its table, or the file it was opened from).
RA/Dec columns are found case-insensitively (``ra``/``dec``, ``raj2000``/``dej2000``, ``ra_deg`` ...,
or named by the client), in degrees or sexagesimal strings, taken as ICRS. Rows are returned nearest
the centre first, at most ``max_rows``, with a ``truncated`` flag.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

from app.errors import InvalidRequest

RA_NAMES = ("ra", "ra_deg", "radeg", "ra_d", "raj2000", "_raj2000", "ra_icrs", "ra_j2000", "alpha", "ra_icrs_deg")
DEC_NAMES = (
    "dec", "dec_deg", "decdeg", "dec_d", "dej2000", "decj2000", "_dej2000", "de_icrs", "dec_icrs", "dec_j2000",
    "delta", "de",
)
NAME_NAMES = ("name", "id", "source", "source_id", "main_id", "designation", "object", "objname", "srcname")
FORMATS = {
    ".csv": "ascii.csv",
    ".tsv": "ascii.tab",
    ".tab": "ascii.tab",
    ".vot": "votable",
    ".votable": "votable",
    ".xml": "votable",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".tbl": "ascii.ipac",
    ".ipac": "ascii.ipac",
}
MAX_ROWS_LIMIT = 100_000
_CACHE_SIZE = 8


def table_format(path: Path) -> str | None:
    """astropy's reader name for a catalogue file, from its suffix (``None``: let astropy guess)."""
    return FORMATS.get(path.suffix.lower())


def read_table(path: Path) -> Table:
    """Read a catalogue file with astropy (warnings about units or VOTable details are not errors)."""
    try:
        with warnings.catch_warnings():
            # Units and VOTable spec deviations in user files must not fail a read.
            warnings.simplefilter("ignore")
            fmt = table_format(path)
            return Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # astropy raises many types for unreadable files
        raise InvalidRequest(f"Cannot read the catalogue {path.name}: {type(exc).__name__}.") from None


class TableCache:
    """The last few catalogues read, keyed by path and modification time (a viewer pans often)."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._tables: OrderedDict[tuple[str, int], Table] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, path: Path) -> Table:
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if key in self._tables:
                self._tables.move_to_end(key)
                return self._tables[key]
        table = read_table(path)
        with self._lock:
            self._tables[key] = table
            while len(self._tables) > self._size:
                self._tables.popitem(last=False)
        return table


def find_column(table: Table, candidates: Sequence[str], explicit: str | None, what: str) -> str | None:
    """The column named ``explicit`` or the first of ``candidates``, both case-insensitive."""
    lower = {name.lower(): name for name in table.colnames}
    if explicit:
        if explicit.lower() not in lower:
            raise InvalidRequest(f"The catalogue has no {what} column '{explicit}'.")
        return lower[explicit.lower()]
    return next((lower[c] for c in candidates if c in lower), None)


def sky_positions(table: Table, ra_col: str, dec_col: str) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec in degrees (NaN where missing); sexagesimal string columns are parsed (RA in hours)."""
    ra, dec = table[ra_col], table[dec_col]
    if ra.dtype.kind in "USO" or dec.dtype.kind in "USO":
        try:
            coords = SkyCoord([str(v) for v in ra], [str(v) for v in dec], unit=(u.hourangle, u.deg))
        except ValueError:
            raise InvalidRequest(f"Cannot parse the coordinates in '{ra_col}'/'{dec_col}'.") from None
        return coords.ra.deg, coords.dec.deg
    return (np.ma.filled(np.ma.asarray(ra, dtype=float), np.nan),
            np.ma.filled(np.ma.asarray(dec, dtype=float), np.nan))


def angular_distance(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Great-circle distance (degrees) from ``(ra0, dec0)``; the haversine form, stable at small angles."""
    r0, d0 = math.radians(ra0), math.radians(dec0)
    r, d = np.radians(ra), np.radians(dec)
    h = np.sin((d - d0) / 2) ** 2 + math.cos(d0) * np.cos(d) * np.sin((r - r0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def _json_value(value: Any) -> Any:
    if np.ma.is_masked(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def sources_in_field(
    table: Table,
    *,
    ra_deg: float,
    dec_deg: float,
    radius_deg: float,
    max_rows: int,
    ra_column: str | None = None,
    dec_column: str | None = None,
    name_column: str | None = None,
) -> dict[str, Any]:
    """Rows of ``table`` within ``radius_deg`` of the centre, nearest first.

    Returns
    -------
    dict
        ``sources`` (each ``{ra_deg, dec_deg, name, separation_deg, <other scalar columns>}``),
        ``n_sources``, ``total_in_field``, ``truncated`` and the columns used.
    """
    if not 1 <= max_rows <= MAX_ROWS_LIMIT:
        raise InvalidRequest(f"max_rows must be between 1 and {MAX_ROWS_LIMIT}.")
    ra_col = find_column(table, RA_NAMES, ra_column, "RA")
    dec_col = find_column(table, DEC_NAMES, dec_column, "Dec")
    if ra_col is None or dec_col is None:
        raise InvalidRequest(f"No RA/Dec columns found among: {', '.join(table.colnames)}.")
    name_col = find_column(table, NAME_NAMES, name_column, "name")
    ra, dec = sky_positions(table, ra_col, dec_col)
    sep = angular_distance(ra_deg, dec_deg, ra, dec)
    inside = np.flatnonzero(np.isfinite(sep) & (sep <= radius_deg))
    order = inside[np.argsort(sep[inside], kind="stable")]
    chosen = order[:max_rows]
    extra = [c for c in table.colnames if c not in (ra_col, dec_col, name_col) and getattr(table[c], "ndim", 0) == 1]
    sources = []
    for i in chosen:
        row = {c: _json_value(table[c][i]) for c in extra}
        row.update(
            ra_deg=float(ra[i]),
            dec_deg=float(dec[i]),
            name=str(_json_value(table[name_col][i])) if name_col else f"row {int(i)}",
            separation_deg=float(sep[i]),
            row_index=int(i),
        )
        sources.append(row)
    return {
        "sources": sources,
        "n_sources": len(sources),
        "total_in_field": int(len(inside)),
        "truncated": bool(len(inside) > len(chosen)),
        "ra_column": ra_col,
        "dec_column": dec_col,
        "name_column": name_col,
    }


def _stack(tables: list[Table]) -> Table:
    from astropy.table import vstack

    with warnings.catch_warnings():
        # Differing per-file metadata (descriptions, units) is not an error when stacking rows.
        warnings.simplefilter("ignore")
        return tables[0] if len(tables) == 1 else vstack(tables)


def dataset_overlay(
    dataset: Any, cache: TableCache, roots: Sequence[Path], **query: Any
) -> dict[str, Any]:
    """:func:`sources_in_field` for an open catalogue dataset.

    When :mod:`app.services.catalogue` offers ``rows_in_cone(dataset, *, ra_deg, dec_deg, radius_deg,
    max_rows)`` (same result shape), it answers; otherwise the files the dataset was opened from
    (``info["paths"]``, else ``dataset.path``; re-confined to ``roots``) are read with astropy, and
    the catalogue's detected sky columns (``info["coordinate_fields"]``) are used unless the client
    named others.
    """
    from app.io.paths import confine

    if dataset.kind != "catalogue":
        raise InvalidRequest(f"Dataset {dataset.dataset_id} is a {dataset.kind}, not a catalogue.")
    try:
        from app.services import catalogue as catalogue_service
    except ImportError:  # the catalogue service's optional dependencies are missing
        catalogue_service = None
    cone = getattr(catalogue_service, "rows_in_cone", None)
    if cone is not None:
        return cone(dataset, ra_deg=query["ra_deg"], dec_deg=query["dec_deg"], radius_deg=query["radius_deg"],
                    max_rows=query["max_rows"])
    info = dataset.info or {}
    coords = info.get("coordinate_fields") or {}
    if coords.get("system") == "sky":
        query["ra_column"] = query.get("ra_column") or coords.get("ra")
        query["dec_column"] = query.get("dec_column") or coords.get("dec")
    paths = [confine(str(p), roots) for p in (info.get("paths") or [dataset.path])]
    return sources_in_field(_stack([cache.get(p) for p in paths]), **query)
