"""Atomic FITS writing: a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits


def write_fits_atomic(path: Path, data: np.ndarray, header: fits.Header) -> Path:
    """Write ``data`` with ``header`` to ``path`` via a temporary file in the same directory + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.PrimaryHDU(data=np.asarray(data, dtype=">f4"), header=header).writeto(tmp, overwrite=True)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def unique_output_path(directory: Path, stem: str, suffix: str = ".fits") -> Path:
    """``directory/stem.fits``, or ``stem_1.fits``, ``stem_2.fits`` ... if taken."""
    candidate = directory / f"{stem}{suffix}"
    counter = 1
    while candidate.exists():
        candidate = directory / f"{stem}_{counter}{suffix}"
        counter += 1
    return candidate
