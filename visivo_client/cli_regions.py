"""The ``visivo`` commands of issue 17: several moments with σ maps, region spectra and region statistics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from visivo_client.cli_commands import OutputError, UsageError, emit, parse_range
from visivo_client.client import Client


def parse_orders(text: str) -> list[int]:
    """``"0,1,2,8"`` → ``[0, 1, 2, 8]``."""
    try:
        orders = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--orders {text!r}: expected integers separated by commas, e.g. 0,1,2,8") from None
    if not orders:
        raise UsageError("--orders: at least one order")
    return orders


def write_hdulist(hdul: fits.HDUList, out: str, overwrite: bool) -> str:
    """Write a multi-extension FITS (refusing to replace a file without ``--overwrite``)."""
    path = Path(out)
    if path.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    try:
        hdul.writeto(path, overwrite=overwrite)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc}") from None
    return str(path)


def moments(client: Client, args: argparse.Namespace) -> int:
    """``visivo moment --orders 0,1,2,8 [--uncertainty]``: one multi-extension FITS (``MOM<k>``, ``SIG<k>``)."""
    ds = client.open(args.file)
    hdul = ds.moments(parse_orders(args.orders), parse_range(args.channels, "--channels"), convention=args.convention,
                      threshold=args.threshold, rms=args.rms, uncertainty=args.uncertainty,
                      rest_freq_hz=args.rest_freq)
    out = write_hdulist(hdul, args.output, args.overwrite)
    lines = []
    for hdu in hdul[1:]:
        finite = np.isfinite(hdu.data)
        low, high = (float(np.nanmin(hdu.data)), float(np.nanmax(hdu.data))) if finite.any() else (np.nan, np.nan)
        lines.append(f"{hdu.name:>6}: {int(finite.sum())} finite pixels, range {low:.6g} .. {high:.6g} "
                     f"{hdu.header.get('BUNIT', '')}")
    lines.append(f"written to {out}")
    meta: dict[str, Any] = dict(getattr(hdul, "meta", {}))
    return emit(args, {**meta, "output": out, "extensions": [h.name for h in hdul[1:]]}, "\n".join(lines))


def _region_source(args: argparse.Namespace) -> dict[str, Any]:
    if (args.regions is None) == (args.region_file is None):
        raise UsageError("give either --regions TEXT or --region-file PATH (a file on the server)")
    return {"regions": args.regions.replace("\\n", "\n") if args.regions else None, "region_file": args.region_file,
            "format": args.format, "channels": parse_range(args.channels, "--channels")}


def region_spectrum(client: Client, args: argparse.Namespace) -> int:
    ds = client.open(args.file)
    tables = ds.region_spectrum(**_region_source(args))
    lines = []
    for t in tables:
        total = np.nansum(t["sum"]) if np.isfinite(t["sum"]).any() else float("nan")
        lines.append(f"region {t.meta['index']} {t.meta['shape']}: {t.meta['num_pixels']} pixels, "
                     f"{len(t)} channels, peak mean {np.nanmax(t['mean']):.6g} {ds.bunit}, sum over channels "
                     f"{total:.6g}")
    data = [{**{k: t.meta[k] for k in ("index", "shape", "num_pixels", "bbox")},
             **{name: [None if not np.isfinite(v) else float(v) for v in t[name]] for name in ("spectral", "sum",
                                                                                               "mean")},
             "count": [int(v) for v in t["count"]]} for t in tables]
    return emit(args, data, "\n".join(lines))


def region_stats(client: Client, args: argparse.Namespace) -> int:
    ds = client.open(args.file)
    table = ds.region_stats(**_region_source(args))
    keys = ("npts", "mean", "sigma", "rms", "min", "max", "median")
    lines = [f"{'region':>8} {'shape':>10} " + " ".join(f"{k:>12}" for k in keys) + f"  ({ds.bunit})"]
    lines += [f"{row['index']:>8} {row['shape']:>10} " + " ".join(f"{row[k]:>12.6g}" for k in keys) for row in table]
    data = [{name: (row[name].tolist() if hasattr(row[name], "tolist") else row[name]) for name in table.colnames}
            for row in table]
    return emit(args, data, "\n".join(lines))


def add_region_arguments(p: argparse.ArgumentParser) -> None:
    """``FILE``, ``--regions`` / ``--region-file``, ``--format``, ``--channels``."""
    p.add_argument("file", metavar="FILE")
    p.add_argument("--regions", metavar="TEXT", help="DS9 or CRTF region text ('\\n' separates lines), e.g. "
                                                     "'image\\ncircle(128,128,20)'")
    p.add_argument("--region-file", metavar="PATH", help="a .reg/.crtf region file on the server (in its data roots)")
    p.add_argument("--format", choices=["ds9", "crtf"], help="region format (default: crtf if the text starts "
                                                             "with #CRTF, else ds9)")
    p.add_argument("--channels", metavar="START:END", help="inclusive channel range (default all)")
