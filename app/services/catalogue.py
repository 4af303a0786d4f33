"""Catalogues: open (CSV, VOTable, FITS table, IPAC, ASCII; several files), describe, query, subset.

The table lives in DuckDB (:mod:`app.io.catalogue_store`); a query fetches only the
requested page. ``coordinate_fields`` names the sky (RA/Dec) or cartesian (X/Y/Z) columns,
matched case-insensitively with non-alphanumerics ignored (``_RAJ2000`` → ``raj2000``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from app.errors import InvalidRequest
from app.io.catalogue_readers import csv_column_names, read_astropy_table
from app.io.catalogue_store import Filter, TableField, TableStore
from app.io.paths import confine
from app.services.sessions import Dataset, SessionRegistry, new_dataset_id

#: Largest page of JSON rows one query returns (a larger ``limit`` is capped and says so).
MAX_PAGE_ROWS = 1_000_000
DEFAULT_LIMIT = 50_000

_FORMAT_ALIASES = {
    "csv": "csv", "tsv": "csv", "txt-csv": "csv",
    "votable": "votable", "vot": "votable", "xml": "votable",
    "fits": "fits", "fit": "fits", "fts": "fits", "fits_table": "fits",
    "ipac": "ipac", "tbl": "ipac",
    "ascii": "ascii", "txt": "ascii", "dat": "ascii",
}
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "csv", ".vot": "votable", ".votable": "votable", ".xml": "votable",
                   ".fits": "fits", ".fit": "fits", ".fts": "fits", ".ipac": "ipac", ".tbl": "ipac",
                   ".txt": "ascii", ".dat": "ascii"}
_ASTROPY_FORMATS = {"votable": "votable", "fits": "fits", "ipac": "ascii.ipac", "ascii": "ascii"}

_RA = ("ra", "radeg", "raj2000", "ra2000", "raicrs", "rajdeg", "alpha", "alphaj2000", "rightascension")
_DEC = ("dec", "decdeg", "dej2000", "decj2000", "dec2000", "de", "deicrs", "decicrs", "dedeg", "delta",
        "deltaj2000", "declination")
_CARTESIAN = {axis: (axis, f"sg{axis}", f"{axis}mpc", f"pos{axis}", f"p{axis}", f"{axis}pos", f"{axis}coord")
              for axis in ("x", "y", "z")}
_REDSHIFT = ("z", "redshift", "zspec", "zmean", "zphot")  # the desktop client's priority


def _normalised(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def detect_format(path: Path, requested: str | None) -> str:
    """Our format name (csv, votable, fits, ipac, ascii) from ``format`` or the file suffix."""
    if requested and requested.strip():
        fmt = _FORMAT_ALIASES.get(requested.strip().lower())
        if fmt is None:
            valid = "csv, tsv, votable, fits, ipac, ascii"
            raise InvalidRequest(f"Unknown catalogue format '{requested}'; use one of {valid}.")
    else:
        name = path.name.lower().removesuffix(".gz")
        fmt = _SUFFIX_FORMATS.get(Path(name).suffix, "csv")
    if fmt == "ipac" and not _looks_like_ipac(path):
        fmt = "ascii"  # a whitespace-separated .tbl (e.g. a simulation snapshot)
    return fmt


def _looks_like_ipac(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    first = next((line.lstrip() for line in head.splitlines() if line.strip()), "")
    return first.startswith(("\\", "|"))


def _column_mismatch(path: Path, first: Path, names: Sequence[str], expected: Sequence[str]) -> InvalidRequest:
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    return InvalidRequest(f"Catalogue file '{path.name}' does not have the same columns as '{first.name}': "
                          f"missing {missing}, extra {extra}.")


def load_store(paths: Sequence[Path], fmt: str) -> tuple[TableStore, list[str]]:
    """Load one or more files of one format into a :class:`TableStore` (columns must match by name)."""
    if fmt == "csv":
        expected = csv_column_names(paths[0]) if len(paths) > 1 else []
        for path in paths[1:]:
            names = csv_column_names(path)
            if sorted(names) != sorted(expected):
                raise _column_mismatch(path, paths[0], names, expected)
        return TableStore.from_csv(paths), []
    tables, units, notes = [], {}, []
    for path in paths:
        table, file_units, file_notes = read_astropy_table(path, _ASTROPY_FORMATS[fmt])
        if tables:
            if sorted(table.column_names) != sorted(tables[0].column_names):
                raise _column_mismatch(path, paths[0], table.column_names, tables[0].column_names)
            table = table.select(tables[0].column_names)
        tables.append(table)
        units = {**file_units, **units}
        notes += file_notes
    try:
        combined = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidRequest(f"Catalogue files have incompatible column types: {exc}") from None
    return TableStore.from_arrow(combined, units=units), notes


def _pick(fields: Sequence[TableField], aliases: Sequence[str], exclude: Sequence[str] = ()) -> str | None:
    numeric = {_normalised(f.name): f.name for f in reversed(fields) if f.numeric and f.name not in exclude}
    return next((numeric[a] for a in aliases if a in numeric), None)


def coordinate_fields(fields: Sequence[TableField]) -> dict[str, Any]:
    """``{"system": "sky", "ra", "dec"}``, ``{"system": "cartesian", "x", "y", "z"}`` or ``{"system": "none"}``."""
    ra, dec = _pick(fields, _RA), _pick(fields, _DEC)
    if ra and dec:
        return {"system": "sky", "ra": ra, "dec": dec, "fields": [ra, dec]}
    xyz = [_pick(fields, _CARTESIAN[a]) for a in ("x", "y", "z")]
    if all(xyz):
        return {"system": "cartesian", "x": xyz[0], "y": xyz[1], "z": xyz[2], "fields": xyz}
    return {"system": "none", "fields": []}


def catalogue_metadata(store: TableStore, paths: Sequence[Path], fmt: str, notes: list[str]) -> dict[str, Any]:
    """The open response (without ids): format, files, rows, typed fields, coordinate and redshift fields."""
    coords = coordinate_fields(store.fields)
    redshift = _pick(store.fields, _REDSHIFT, exclude=coords["fields"] if coords["system"] == "cartesian" else ())
    return {
        "kind": "catalogue",
        "format": fmt,
        "paths": [str(p) for p in paths],
        "num_files": len(paths),
        "num_rows": store.num_rows,
        "total_rows": store.num_rows,
        "num_fields": len(store.fields),
        "fields": [f.describe() for f in store.fields],
        "field_names": [f.name for f in store.fields],
        "field_types": {f.name: f.kind for f in store.fields},
        "coordinate_fields": coords,
        "redshift_field": redshift,
        "notes": notes,
    }


def open_catalogue(registry: SessionRegistry, roots: tuple[Path, ...], *, path: str | None,
                   paths: Sequence[str] | None, fmt: str | None, session_id: str | None) -> Dataset:
    """Open one catalogue file, or several with identical columns, in the (possibly new) session."""
    raw = [p for p in (paths or []) if p] or ([path] if path else [])
    if not raw:
        raise InvalidRequest("Give the catalogue 'path' (or 'paths' for several files).")
    resolved = [confine(p, roots) for p in raw]
    formats = [detect_format(p, fmt) for p in resolved]
    for p, f in zip(resolved, formats, strict=True):
        if f != formats[0]:
            raise InvalidRequest(f"Catalogue file '{p.name}' is {f}, not {formats[0]} like '{resolved[0].name}'.")
    store, notes = load_store(resolved, formats[0])
    try:
        meta = catalogue_metadata(store, resolved, formats[0], notes)
    except Exception:
        store.close()
        raise
    session = registry.ensure(session_id)
    dataset = Dataset(new_dataset_id(), session.session_id, resolved[0], "catalogue", store, meta)
    return registry.add_dataset(session, dataset)


def require_catalogue(dataset: Dataset) -> TableStore:
    """The table of a catalogue dataset (anything else is refused)."""
    if dataset.kind != "catalogue" or not isinstance(dataset.handle, TableStore):
        raise InvalidRequest(f"Dataset {dataset.dataset_id} is a {dataset.kind}, not a catalogue.")
    return dataset.handle


def page_limit(limit: int | None, cap: int) -> tuple[int, bool]:
    """The effective page size (default 50 000, at most ``cap``) and whether it was capped."""
    value = DEFAULT_LIMIT if limit is None else int(limit)
    if value < 0:
        raise InvalidRequest("limit must be >= 0.")
    return min(value, cap), value > cap


def to_filters(items: Sequence[Any]) -> list[Filter]:
    """Request filters (``{field, op, value}`` objects) as :class:`Filter`."""
    out = []
    for item in items or []:
        data = item if isinstance(item, dict) else item.model_dump()
        if not data.get("field"):
            raise InvalidRequest("Every filter needs a 'field'.")
        out.append(Filter(str(data["field"]), str(data.get("op") or ""), data.get("value")))
    return out


def query_catalogue(dataset: Dataset, *, filters: Sequence[Filter], sort_field: str | None,
                    sort_direction: str | None, limit: int | None, offset: int,
                    fields: Sequence[str] | None = None) -> dict[str, Any]:
    """One page of the filtered, sorted catalogue: ``total_rows`` (after filtering), ``rows``."""
    store = require_catalogue(dataset)
    size, capped = page_limit(limit, MAX_PAGE_ROWS)
    total, names, rows = store.rows(filters, sort_field=sort_field, sort_direction=sort_direction,
                                    limit=size, offset=offset, fields=fields)
    return {
        "total_rows": total, "returned_rows": len(rows), "offset": offset, "limit": size,
        "limit_capped": capped, "has_more": offset + len(rows) < total, "table_rows": store.num_rows,
        "field_names": names, "rows": rows,
    }


def subset_catalogue(dataset: Dataset, *, max_rows: int | None) -> dict[str, Any]:
    """Legacy: the first ``max_rows`` rows, unfiltered."""
    store = require_catalogue(dataset)
    size, capped = page_limit(max_rows, MAX_PAGE_ROWS)
    total, names, rows = store.rows(limit=size)
    return {"total_rows": total, "returned_rows": len(rows), "max_rows": size, "limit_capped": capped,
            "field_names": names, "rows": rows}
