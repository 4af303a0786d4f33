"""Directory listing and FITS header reading, confined to the data roots."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any

from astropy.io import fits

from app.errors import InvalidRequest
from app.io.fits_reader import check_fits_magic
from app.io.paths import confine, is_above_roots

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz")


def is_fits_name(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES)


def _entry(path: Path) -> dict[str, Any] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    is_dir = path.is_dir()
    return {
        "name": path.name,
        "path": str(path),
        "type": "directory" if is_dir else "file",
        "size": 0 if is_dir else int(stat.st_size),
        "modified_time": dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.UTC).isoformat().replace("+00:00", "Z"),
        "is_fits": (not is_dir) and is_fits_name(path.name),
    }


def list_directory(roots: tuple[Path, ...], raw_path: str | None) -> dict[str, Any]:
    """List a directory inside the roots: directories first, then case-insensitive name.

    Hidden entries and symbolic links that lead outside the roots are left out.
    An empty path lists the first root; ``roots`` names every root for navigation.
    ``/`` or any directory above the roots (such as ``<root>/..``, which a file dialog's
    Up button sends) lists the roots themselves as directories with absolute paths
    (``current_path`` ``"/"``); nothing outside the roots is revealed.
    """
    if is_above_roots(raw_path, roots):
        return list_roots(roots)
    directory = confine(raw_path, roots, want_dir=True)
    entries = []
    for child in directory.iterdir():
        if child.name.startswith("."):
            continue
        try:
            confine(str(child), roots, want_dir=child.is_dir())
        except InvalidRequest:
            continue
        entry = _entry(child)
        if entry is not None:
            entries.append(entry)
    entries.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
    return {"current_path": str(directory), "roots": [str(r) for r in roots], "entries": entries}


def list_roots(roots: tuple[Path, ...]) -> dict[str, Any]:
    """The virtual top level: one directory entry per root, ``name`` and ``path`` absolute."""
    entries = []
    for root in roots:
        entry = _entry(root)
        if entry is not None and entry["type"] == "directory":
            entry["name"] = str(root)
            entries.append(entry)
    return {"current_path": "/", "roots": [str(r) for r in roots], "entries": entries}


def header_cards(roots: tuple[Path, ...], raw_path: str) -> dict[str, Any]:
    """The cards of the primary HDU, one string per 80-character card."""
    path = confine(raw_path, roots)
    compressed = check_fits_magic(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=not compressed, lazy_load_hdus=True) as hdul:
                cards = [str(card) for card in hdul[0].header.cards]
    except Exception as exc:
        raise InvalidRequest(f"Cannot read FITS header of {path.name}: {exc}") from None
    return {"path": str(path), "cards": cards}
