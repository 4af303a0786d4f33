"""Readers that turn catalogue files into what :class:`~app.io.catalogue_store.TableStore` loads.

``csv_column_names`` asks DuckDB which columns it sniffs in one CSV file (the multi-file column
check); ``read_astropy_table`` reads VOTable, FITS, IPAC and ASCII tables with astropy and converts
them to Arrow, leaving out multi-dimensional cells with a note.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from app.errors import InvalidRequest
from app.io.catalogue_store import first_line, new_connection


def csv_column_names(path: Path) -> list[str]:
    """Column names DuckDB sniffs in one CSV file (for the multi-file column check)."""
    con = new_connection()
    try:
        described = con.execute("DESCRIBE SELECT * FROM read_csv(?, header=true)", [str(path)]).fetchall()
    except duckdb.Error as exc:
        raise InvalidRequest(f"Cannot read CSV {path.name}: {first_line(exc)}") from None
    finally:
        con.close()
    return [str(row[0]) for row in described]


def read_astropy_table(path: Path, astropy_format: str) -> tuple[pa.Table, dict[str, str], list[str]]:
    """Read a VOTable, FITS table, IPAC or ASCII table with astropy and convert it to Arrow.

    Returns
    -------
    table, units, notes
        The Arrow table, the per-column units and notes about columns that were left out
        (multi-dimensional cells).
    """
    from astropy.table import Table  # noqa: PLC0415

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table.read(path, format=astropy_format)
    except Exception as exc:
        raise InvalidRequest(f"Cannot read {path.name} as {astropy_format}: {first_line(exc)}") from None
    arrays, names, units, notes = [], [], {}, []
    for name in table.colnames:
        column = table[name]
        if column.ndim > 1:
            notes.append(f"column '{name}' of {path.name} has {column.shape[1:]}-shaped cells and was left out")
            continue
        arrays.append(_to_arrow(column))
        names.append(str(name))
        if getattr(column, "unit", None) is not None:
            units[str(name)] = str(column.unit)
    return pa.Table.from_arrays(arrays, names=names), units, notes


def _to_arrow(column: Any) -> pa.Array:
    mask = np.asarray(column.mask) if hasattr(column, "mask") and np.any(column.mask) else None
    data = np.asarray(column.data if hasattr(column, "data") else column)
    if data.dtype.kind == "S":
        data = np.char.decode(data, "utf-8", errors="replace")
    if data.dtype.kind == "O":
        values = [None if v is None else (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
                  for v in data.tolist()]
        return pa.array(values, mask=mask, type=pa.string())
    if data.dtype.kind in "iufb" and not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    return pa.array(data, mask=mask)
