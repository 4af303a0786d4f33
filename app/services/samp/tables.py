"""Catalogues as VOTables for ``table.load.votable`` (CSV, TSV, FITS tables, IPAC ... converted)."""

from __future__ import annotations

import warnings
from pathlib import Path

from app.errors import InvalidRequest
from app.services.hips.overlay import read_table
from app.services.samp.files import is_votable_name, safe_filename, unique_destination


def as_votable(path: Path, export_dir: Path) -> tuple[Path, bool]:
    """A VOTable for the catalogue at ``path``: the file itself, or a converted copy in ``export_dir``.

    Returns
    -------
    tuple
        ``(votable path, converted)``.
    """
    if is_votable_name(path.name):
        return path, False
    table = read_table(path)
    stem = safe_filename(path.name, "catalogue").split(".")[0] or "catalogue"
    dest = unique_destination(export_dir, f"{stem}.vot")
    try:
        with warnings.catch_warnings():
            # Column names or units that VOTable renders differently are not errors for a peer.
            warnings.simplefilter("ignore")
            table.write(dest, format="votable")
    except Exception as exc:  # astropy raises many types for unrepresentable columns
        dest.unlink(missing_ok=True)
        raise InvalidRequest(f"Cannot convert {path.name} to VOTable: {type(exc).__name__}.") from None
    return dest, True
