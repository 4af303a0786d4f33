"""VisIVO Binary Tables as datasets: open, query (catalogue semantics), subset, and volumes as cubes.

A VBT opened normally is a dataset of kind ``vbt``; its queries run in DuckDB directly over
the memmap (zero-copy for native-endian files) with the catalogue's filter/sort/paging rules,
and answer ``columns`` as base64 little-endian float64 vectors.

A **volume** opened with ``as_cube`` becomes a dataset of kind ``cube`` (``image`` when
``nz == 1``): one field (``field``, default the first) is presented through the same
:class:`~app.io.fits_reader.CubeSource` block reader as a FITS cube, with a linear WCS
(``CTYPE = X, Y, Z``, ``CDELT = dx, dy, dz``, pixel 1 at 0), so the cube and product routes
(slice, sub-volume, moments, PV, noise ...) work on it. VBT queries work on it too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.io import fits

from app.errors import InvalidRequest
from app.io.catalogue_store import Filter, TableStore
from app.io.fits_reader import CubeSource
from app.io.paths import confine
from app.io.vbt import BINARY_NOT_FOUND, HEADER_NOT_FOUND, VbtTable, pair_paths, read_header
from app.io.wcs_info import WcsInfo, analyse_wcs
from app.services.catalogue import page_limit
from app.services.datasets import image_metadata
from app.services.encoding import check_compression, encode_array
from app.services.sessions import Dataset, SessionRegistry, new_dataset_id

#: Largest page of column vectors one query returns.
MAX_PAGE_ROWS = 5_000_000


class VbtHandle:
    """An open VBT: the memmapped table and, built on first query, its DuckDB view."""

    def __init__(self, table: VbtTable) -> None:
        self.table = table
        self._store: TableStore | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> TableStore:
        with self._lock:
            if self._store is None:
                self._store = TableStore.from_arrow(self.table.to_arrow(), materialize=False)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
        self.table.close()


@dataclass
class VbtCube:
    """A volume VBT field presented like :class:`~app.io.fits_reader.FitsImage` to the cube routes."""

    path: Path
    header: fits.Header
    wcs_info: WcsInfo
    source: CubeSource
    vbt: VbtHandle
    field: str
    hdu_index: int = 0
    compressed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.vbt.close()


def open_table(roots: tuple[Path, ...], raw_path: str) -> VbtTable:
    """Find the header/binary pair from either path (inside the data roots) and open it."""
    if not (raw_path or "").strip():
        raise InvalidRequest("Give the VBT 'path' (the .bin or the .bin.head).")
    head_raw, bin_raw = pair_paths(raw_path)
    try:
        head = confine(head_raw, roots)
    except InvalidRequest:
        raise InvalidRequest(HEADER_NOT_FOUND) from None
    header = read_header(head)
    try:
        binary = confine(bin_raw, roots)
    except InvalidRequest:
        raise InvalidRequest(BINARY_NOT_FOUND) from None
    return VbtTable(header, head, binary)


def vbt_metadata(table: VbtTable) -> dict[str, Any]:
    """The VBT open response (without ids)."""
    h = table.header
    info: dict[str, Any] = {
        "kind": h.kind, "vbt_kind": h.kind, "fields": list(h.fields), "field_names": list(h.fields),
        "num_fields": len(h.fields), "num_rows": h.num_rows, "scalar_type": h.scalar_type,
        "endian": h.endian, "header_path": str(table.head_path), "binary_path": str(table.bin_path),
        "file_size_bytes": table.bin_path.stat().st_size,
    }
    if h.grid is not None:
        info.update(dimensions=list(h.grid), spacing=list(h.spacing), width=h.grid[0], height=h.grid[1],
                    depth=h.grid[2])
    return info


def cube_header(table: VbtTable, field_name: str) -> fits.Header:
    """A linear 3-axis header for a volume field: pixel 1 at 0, CDELT = cell size."""
    nx, ny, nz = table.header.grid
    header = fits.Header()
    header["NAXIS"] = 3
    for i, (n, d, name) in enumerate(zip((nx, ny, nz), table.header.spacing, "XYZ", strict=True), start=1):
        header[f"NAXIS{i}"] = n
        header[f"CTYPE{i}"], header[f"CRVAL{i}"], header[f"CRPIX{i}"], header[f"CDELT{i}"] = name, 0.0, 1.0, d
    header["OBJECT"] = field_name
    header["HISTORY"] = f"VisIVO Binary Table volume {table.bin_path.name}, field {field_name}"
    return header


def as_cube(table: VbtTable, field_name: str | None) -> VbtCube:
    """Present one field of a volume VBT as a cube dataset handle."""
    h = table.header
    if h.grid is None:
        raise InvalidRequest("Only a volume VBT can be opened as a cube; this one is a point table.")
    name = field_name or h.fields[0]
    if name not in h.fields:
        raise InvalidRequest(f"Unknown field '{name}'. Available fields: {', '.join(h.fields)}.")
    header = cube_header(table, name)
    info = analyse_wcs(header, tuple(h.grid))
    source = CubeSource(table.volume(name), (None, None, None), (0, 1, 2))
    return VbtCube(table.bin_path, header, info, source, VbtHandle(table), name)


def open_vbt(registry: SessionRegistry, roots: tuple[Path, ...], *, path: str, session_id: str | None,
             cube: bool = False, field_name: str | None = None) -> Dataset:
    """Open a VBT (kind ``vbt``), or a volume field of one as a cube (``cube=True``)."""
    table = open_table(roots, path)
    try:
        meta = vbt_metadata(table)
        if cube:
            handle: Any = as_cube(table, field_name)
            cube_meta = image_metadata(handle)
            meta = {**meta, **cube_meta, "vbt_kind": "volume", "field": handle.field, "bunit": ""}
            kind = cube_meta["kind"]
        else:
            handle, kind = VbtHandle(table), "vbt"
    except Exception:
        table.close()
        raise
    session = registry.ensure(session_id)
    dataset = Dataset(new_dataset_id(), session.session_id, table.bin_path, kind, handle, meta)
    return registry.add_dataset(session, dataset)


def require_vbt(dataset: Dataset) -> VbtHandle:
    """The VBT behind a dataset (a VBT, or a VBT volume opened as a cube)."""
    handle = dataset.handle
    if isinstance(handle, VbtHandle):
        return handle
    if isinstance(handle, VbtCube):
        return handle.vbt
    raise InvalidRequest(f"Dataset {dataset.dataset_id} is a {dataset.kind}, not a VBT.")


def _columns_body(names: list[str], columns: dict, compression: str) -> dict[str, Any]:
    return {
        "field_names": names, "scalar_type": "float64", "byte_order": "little", "compression": compression,
        "columns": {n: encode_array(columns[n], compression, dtype="<f8") for n in names},
    }


def query_vbt(dataset: Dataset, *, filters: list[Filter], sort_field: str | None, sort_direction: str | None,
              limit: int | None, offset: int, fields: list[str] | None = None,
              compression: str | None = None) -> dict[str, Any]:
    """One page of the filtered, sorted table as float64 column vectors; ``num_rows`` = rows in the page."""
    vbt = require_vbt(dataset)
    comp = check_compression(compression)
    size, capped = page_limit(limit, MAX_PAGE_ROWS)
    total, names, columns = vbt.store.columns(filters, sort_field=sort_field, sort_direction=sort_direction,
                                              limit=size, offset=offset, fields=fields)
    returned = len(next(iter(columns.values()))) if columns else 0
    return {
        "total_rows": total, "returned_rows": returned, "num_rows": returned, "offset": offset, "limit": size,
        "limit_capped": capped, "has_more": offset + returned < total, "table_rows": vbt.table.header.num_rows,
        **_columns_body(names, columns, comp),
    }


def subset_vbt(dataset: Dataset, *, max_rows: int | None, fields: list[str] | None = None,
               compression: str | None = None) -> dict[str, Any]:
    """Legacy bulk fetch: the first ``max_rows`` rows, unfiltered."""
    vbt = require_vbt(dataset)
    comp = check_compression(compression)
    size, capped = page_limit(max_rows, MAX_PAGE_ROWS)
    total, names, columns = vbt.store.columns(limit=size, fields=fields)
    returned = len(next(iter(columns.values()))) if columns else 0
    return {"total_rows": total, "returned_rows": returned, "num_rows": returned, "max_rows": size,
            "limit_capped": capped, **_columns_body(names, columns, comp)}
