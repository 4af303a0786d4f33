"""Deterministic generator of the demo catalogue (CSV) and VisIVO Binary Table (VBT) pair.

The FITS demo files are real VLA data (see ``app/demo_data/PROVENANCE.md``); the
tables are generated here with a fixed seed so that ``python -m app.demo`` rewrites
them byte for byte (a test checks this).

- ``catalogue_sky.csv``: 400 sources scattered around NGC 5921 and 3C 273 with
  name, RA/Dec (deg), redshift, flux (mJy) and morphology.
- ``galaxies.bin`` + ``galaxies.bin.head``: a 2 000-row point VBT (float32,
  little endian, column-major) with x, y, z (Mpc), vx, vy, vz (km/s) and log mass.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DEMO_DIR = Path(__file__).resolve().parent / "demo_data"
_SEED = 5921
_FIELDS = ("x", "y", "z", "vx", "vy", "vz", "logmass")


def catalogue_rows(rng: np.random.Generator, n: int = 400) -> list[str]:
    """CSV lines (header first) of the sky catalogue."""
    centres = np.array([[230.5, 5.0667, 0.00456], [187.2779, 2.0524, 0.158]])
    which = rng.integers(0, 2, n)
    ra = centres[which, 0] + rng.normal(0.0, 0.35, n)
    dec = centres[which, 1] + rng.normal(0.0, 0.35, n)
    z = np.clip(centres[which, 2] + rng.normal(0.0, 0.01, n), 0.0005, None)
    flux = np.round(10 ** rng.uniform(-1.0, 2.5, n), 4)
    morph = np.array(["spiral", "elliptical", "irregular", "lenticular"])[rng.integers(0, 4, n)]
    lines = ["name,ra,dec,redshift,flux_mjy,morphology"]
    for i in range(n):
        lines.append(f"SRC{i + 1:04d},{ra[i]:.6f},{dec[i]:.6f},{z[i]:.6f},{flux[i]:.4f},{morph[i]}")
    return lines


def vbt_columns(rng: np.random.Generator, n: int = 2000) -> np.ndarray:
    """(7, n) float32 columns: positions in a 100 Mpc box, velocities, log mass."""
    pos = rng.uniform(-50.0, 50.0, (3, n))
    vel = rng.normal(0.0, 300.0, (3, n))
    logmass = rng.normal(10.5, 0.6, (1, n))
    return np.vstack([pos, vel, logmass]).astype("<f4")


def write_demo_tables(out_dir: Path = DEMO_DIR) -> list[Path]:
    """Write the catalogue and VBT pair into ``out_dir``; returns the paths written."""
    rng = np.random.default_rng(_SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "catalogue_sky.csv"
    csv_path.write_text("\n".join(catalogue_rows(rng)) + "\n")
    columns = vbt_columns(rng)
    bin_path = out_dir / "galaxies.bin"
    bin_path.write_bytes(columns.tobytes(order="C"))  # row i of `columns` = field i: column-major table
    head_path = out_dir / "galaxies.bin.head"
    head_path.write_text("\n".join(["float", str(len(_FIELDS)), str(columns.shape[1]), "little", *_FIELDS]) + "\n")
    return [csv_path, bin_path, head_path]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEMO_DIR
    for path in write_demo_tables(target):
        print(path)
