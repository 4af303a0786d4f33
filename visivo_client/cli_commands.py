"""The ``visivo`` commands: each takes the parsed arguments and a :class:`Client`, prints, returns 0."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from visivo_client.client import Client


class UsageError(Exception):
    """A malformed option value (exit code 2, like argparse's own errors)."""


class OutputError(Exception):
    """The output file could not be written (exit code 4)."""


def parse_range(text: str | None, name: str) -> tuple[int, int] | None:
    """``"5:50"`` → ``(5, 50)`` (inclusive); ``"7"`` → ``(7, 7)``."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        raise UsageError(f"{name} {text!r}: expected START:END (integers)") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise UsageError(f"{name} {text!r}: expected START:END")
    return parts[0], parts[1]


def parse_ranges(text: str, name: str) -> list[list[int]]:
    """``"0:4,51:55"`` → ``[[0, 4], [51, 55]]``."""
    return [list(parse_range(item, name)) for item in text.split(",") if item.strip()]  # type: ignore[arg-type]


def parse_path(text: str) -> list[tuple[float, float]]:
    """``"x0,y0:x1,y1[:x2,y2...]"`` → vertices."""
    try:
        vertices = [tuple(float(v) for v in point.split(",")) for point in text.split(":")]
    except ValueError:
        raise UsageError(f"--path {text!r}: expected x0,y0:x1,y1 (numbers)") from None
    if len(vertices) < 2 or any(len(v) != 2 for v in vertices):
        raise UsageError(f"--path {text!r}: expected at least two x,y vertices separated by ':'")
    return vertices  # type: ignore[return-value]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def emit(args: argparse.Namespace, data: Any, text: str) -> int:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(_jsonable(data), indent=2) if args.json else text)
    return 0


def _write(hdu: fits.PrimaryHDU, out: str, overwrite: bool) -> str:
    path = Path(out)
    if path.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    try:
        hdu.writeto(path, overwrite=overwrite)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc}") from None
    return str(path)


def _product(args: argparse.Namespace, hdu: fits.PrimaryHDU, label: str) -> int:
    out = _write(hdu, args.output, args.overwrite)
    meta = {k: v for k, v in getattr(hdu, "meta", {}).items() if k not in ("valid", "error")}
    data = hdu.data
    finite = np.isfinite(data)
    low, high = (float(np.nanmin(data)), float(np.nanmax(data))) if finite.any() else (float("nan"),) * 2
    unit = hdu.header.get("BUNIT", "")
    text = (f"{label}: {data.shape[1]}x{data.shape[0]} map, {int(finite.sum())} finite pixels, "
            f"range {low:.6g} .. {high:.6g} {unit}\nwritten to {out}")
    return emit(args, {**meta, "output": out, "shape": list(data.shape), "bunit": unit}, text)


# ---------------------------------------------------------------------- commands
def health(client: Client, args: argparse.Namespace) -> int:
    h = client.health()
    devices = ", ".join(d.get("name", str(d)) if isinstance(d, dict) else str(d) for d in h.get("devices") or [])
    text = (f"ok={h.get('ok')} version={h.get('version')} backend={h.get('backend')} ({h.get('backend_reason')})\n"
            f"devices: {devices or 'none'}\nworkers={h.get('workers')} heavy_slots={h.get('heavy_slots')} "
            f"sessions={h.get('active_sessions')} tasks={h.get('task_registry_entries')} "
            f"running={h.get('running_tasks')} cache={h.get('product_cache_entries')}/"
            f"{h.get('product_cache_capacity')}")
    return emit(args, h, text)


def ls(client: Client, args: argparse.Namespace) -> int:
    entries = client.ls(args.path or "")
    lines = [f"{'d' if e.get('type') == 'directory' else '-'} {e.get('size') or 0:>12} {e.get('name')}"
             for e in entries]
    return emit(args, entries, "\n".join(lines) or "(empty)")


def header(client: Client, args: argparse.Namespace) -> int:
    cards = client.header(args.file)
    return emit(args, [card.image for card in cards.cards], cards.tostring(sep="\n").rstrip())


def open_(client: Client, args: argparse.Namespace) -> int:
    ds = client.open(args.file)
    info = ds.info
    beam = info.get("beam") or {}
    lines = [f"{ds.dataset_id}  {ds.kind}  shape (z, y, x) = {ds.shape}  BUNIT = {ds.bunit!r}",
             f"path: {ds.path}",
             f"axes: {info.get('ctype')}  units: {info.get('cunit')}"]
    if beam:
        lines.append(f"beam: {beam.get('major'):.4g} x {beam.get('minor'):.4g} arcsec, pa {beam.get('pa'):.4g} deg")
    if info.get("spectral_axis_type"):
        lines.append(f"spectral axis: {info['spectral_axis_type']} ({info.get('spectral_axis_unit')}), "
                     f"rest frequency {info.get('rest_freq_hz')} Hz")
    if info.get("wcs_warning_message"):
        lines.append(f"WCS fixes: {info['wcs_warning_message']}")
    return emit(args, info, "\n".join(lines))


def moment(client: Client, args: argparse.Namespace) -> int:
    if getattr(args, "orders", None) is not None or getattr(args, "uncertainty", False):
        from visivo_client.cli_regions import moments  # noqa: PLC0415  (several maps, σ maps: a multi-extension FITS)

        if args.orders is None:
            args.orders = str(args.order)
        return moments(client, args)
    ds = client.open(args.file)
    hdu = ds.moment(args.order, parse_range(args.channels, "--channels"), convention=args.convention,
                    threshold=args.threshold, rms=args.rms, rest_freq_hz=args.rest_freq)
    return _product(args, hdu, f"moment {args.order} ({args.convention})")


def linewidth(client: Client, args: argparse.Namespace) -> int:
    ds = client.open(args.file)
    hdu = ds.linewidth(parse_range(args.channels, "--channels"), map=args.map, threshold=args.threshold,
                       snr=args.snr, rest_freq_hz=args.rest_freq)
    return _product(args, hdu, f"line width ({args.map})")


def pv(client: Client, args: argparse.Namespace) -> int:
    ds = client.open(args.file)
    hdu = ds.pv(parse_path(args.path), width=args.width, world=args.world,
                channels=parse_range(getattr(args, "channels", None), "--channels"),
                spatial_bin=getattr(args, "spatial_bin", 1), spectral_bin=getattr(args, "spectral_bin", 1))
    out = _write(hdu, args.output, args.overwrite)
    h = hdu.header
    text = (f"PV diagram: {h['NAXIS1']} positions x {h['NAXIS2']} channels, offset 0 .. "
            f"{h['CRVAL1'] + h['CDELT1'] * (h['NAXIS1'] - 1):.6g} {h['CUNIT1']}, {h['CTYPE2']} "
            f"{h['CRVAL2']:.6g} .. {h['CRVAL2'] + h['CDELT2'] * (h['NAXIS2'] - 1):.6g} {h['CUNIT2']}\n"
            f"written to {out}")
    return emit(args, {**getattr(hdu, "meta", {}), "output": out}, text)


def baseline(client: Client, args: argparse.Namespace) -> int:
    ds = client.open(args.file)
    new = ds.baseline(parse_ranges(args.line_free, "--line-free"), order=args.order, method=args.method,
                      channels=parse_range(args.channels, "--channels"))
    result = new.info["baseline"]
    text = (f"baseline ({result.get('method')}, order {result.get('poly_order')}) over "
            f"{len(result.get('fit_channels') or [])} line-free channels: rms {result.get('rms_before'):.6g} -> "
            f"{result.get('rms_after'):.6g} {ds.bunit}\nnew cube on the server: {result.get('output_path')}")
    return emit(args, result, text)


def noise(client: Client, args: argparse.Namespace) -> int:
    ds = client.open(args.file)
    x = y = None
    if args.box:
        try:
            x_text, y_text = args.box.split(",")
        except ValueError:
            raise UsageError(f"--box {args.box!r}: expected X0:X1,Y0:Y1") from None
        x, y = parse_range(x_text, "--box"), parse_range(y_text, "--box")
    table = ds.noise(x=x, y=y, channels=parse_range(args.channels, "--channels"))
    data = {**table.meta, **{name: [None if not np.isfinite(v) else float(v) for v in table[name]]
                             for name in ("mad", "sigma", "median")}}
    lines = [f"{'chan':>5} {'MAD':>12} {'sigma':>12} {'median':>12}  ({ds.bunit})"]
    lines += [f"{row['channel']:>5} {row['mad']:>12.5g} {row['sigma']:>12.5g} {row['median']:>12.5g}"
              for row in table]
    return emit(args, data, "\n".join(lines))


def imstat(client: Client, args: argparse.Namespace) -> int:
    params = {"engine": args.engine} if args.engine else {}
    try:
        answer = client.imstat(args.file, args.region, **params)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stats = answer.get("result", {}).get("DATA", {})
    keys = ("npts", "sum", "mean", "sigma", "rms", "min", "max", "median", "flux")
    text = "\n".join(f"{k:>8} {stats[k]:.8g}" for k in keys if isinstance(stats.get(k), (int, float)))
    return emit(args, answer, text)


def tasks(client: Client, args: argparse.Namespace) -> int:
    if args.task_id and args.cancel:
        gone = client.cancel(args.task_id)
        return emit(args, {"task_id": args.task_id, "cancelled": gone},
                    f"{args.task_id}: {'cancelled and removed' if gone else 'not found'}")
    if args.task_id:
        state = client.task(args.task_id)
        return emit(args, state, f"{state['task_id']} {state['operation']} {state['status']} "
                                 f"{100 * state['progress']:.0f}% {state.get('error') or ''}".rstrip())
    listing = client.tasks()
    lines = [f"{t['task_id']} {t['operation']:>11} {t['status']:>9} {100 * t['progress']:4.0f}% "
             f"{t['age_seconds']:8.1f}s {t.get('error') or ''}".rstrip() for t in listing]
    return emit(args, listing, "\n".join(lines) or "no tasks")
