"""The five JS9 analysis tasks through the real casatasks (``parameters.engine = "casa"``).

Needs the optional ``casa`` extra (casatasks, casatools, casadata) and runs it offline
(:func:`app.casa_runtime.configure_casa_offline`). CASA is not thread-safe, so every call holds
one process-wide lock; the service runs these jobs on the heavy lane without a GPU.

- CASA cannot read gzip-compressed FITS: ``*.fits.gz`` files are read from their inflated copy
  in the server's bounded gzip cache (``<output>/.gzip_cache``, the copy the native engine maps).
- Regions go to CASA as CRTF in 0-based pixels (:meth:`Region.crtf`); channels as ``chans="a~b"``;
  the Stokes plane as ``stokes``.
- Results are shaped exactly like the native engine's (same keys), from CASA's own values:
  ``imstat``/``imfit``/``imval`` return dictionaries; ``specflux`` writes a log file that is
  parsed; ``imview`` reads the plane through the CASA image tool (``ia.getchunk`` with its mask)
  and traces contours with the same smoothing and marching squares as the native engine.
- ``imval`` on an image without a Stokes axis raises a TypeError in CASA 6.7 unless ``chans``
  is given, so ``chans`` is always passed.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from app.casa_runtime import casatasks_available, configure_casa_offline
from app.compute.dispatch import JobContext
from app.io import gzip_cache
from app.services.js9 import native_engine
from app.services.js9 import params as prm
from app.services.js9.errors import Js9BadRequest, Js9TaskFailed
from app.services.js9.images import ImageView, parse_chans, single_plane
from app.services.js9.regions import Region

_LOCK = threading.Lock()
_GZIP_MAGIC = b"\x1f\x8b"

UNAVAILABLE = (
    "Invalid parameter 'engine': 'casa' needs casatasks, which is not installed on this server "
    "(pip install 'visivo-gpu-server[casa]'); use engine 'native'"
)


def available() -> bool:
    """True when casatasks, casatools and casadata are installed (no import)."""
    return casatasks_available()


def _casatasks() -> Any:
    if not available():
        raise Js9BadRequest(UNAVAILABLE)
    configure_casa_offline()
    return importlib.import_module("casatasks")


def _workdir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(tempfile.gettempdir()) / f"visivo-casa-{uid}" / "js9-fits"
    path.mkdir(parents=True, exist_ok=True)
    return path


def casa_readable(path: Path) -> Path:
    """``path`` itself, or for a gzip file its inflated copy in the server's gzip cache (:mod:`app.io.gzip_cache`)."""
    with path.open("rb") as handle:
        if handle.read(2) != _GZIP_MAGIC:
            return path
    with gzip_cache.current().lease(path) as inflated:  # just touched: the most recently used entry
        return inflated


def _call(task: str, **kwargs: Any) -> Any:
    casatasks = _casatasks()
    fn = getattr(casatasks, task)
    with _LOCK:
        try:
            result = fn(**kwargs)
        except Exception as exc:
            raise Js9TaskFailed(f"CASA {task} failed: {type(exc).__name__}: {exc}") from None
    if result is None and task != "specflux" or result is False:
        raise Js9TaskFailed(f"CASA {task} failed (no result; see the CASA log)")
    return result


def _chans(z: range, view: ImageView) -> str:
    if view.image.wcs_info.roles.z is None or view.z_fixed is not None:
        return ""
    return f"{z.start}~{z.stop - 1}" if len(z) > 1 else str(z.start)


def _scalar(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind in "fc" and arr.size == 1:
        return float(arr.reshape(-1)[0])
    if arr.dtype.kind in "iu" and arr.size >= 1:
        return [int(v) for v in arr.reshape(-1)]
    return value


# -- imstat --------------------------------------------------------------------------------------

_IMSTAT_KEYS = ("npts", "sum", "sumsq", "mean", "sigma", "rms", "min", "max", "median", "medabsdevmed", "q1", "q3",
                "quartile", "flux")


def imstat(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """casatasks ``imstat`` over the region (CASA keys under ``DATA``)."""
    z = parse_chans(params.get("chans"), view)
    raw = _call("imstat", imagename=str(casa_readable(view.path)), region=region.crtf() if region else "",
                chans=_chans(z, view), stokes=view.stokes or "")
    data: dict[str, Any] = {}
    for key in _IMSTAT_KEYS:
        if key in raw:
            data[key] = _scalar(raw[key])
    if not data.get("npts"):
        data["npts"] = 0
    data["npts"] = int(data["npts"])
    data["std"] = data.get("sigma")
    for key in ("minpos", "maxpos", "blc", "trc"):
        if key in raw:
            data[key] = [int(v) for v in np.asarray(raw[key]).reshape(-1)]
    if "flux" in data:
        scale = view.flux_scale()
        roles = view.image.wcs_info.roles
        cube = roles.spectral and roles.z is not None and view.z_fixed is None and len(z) > 1
        unit = scale[1] if scale else "Jy"
        data["flux_unit"] = f"{unit}.{view.spectral().unit}" if cube else unit
    return {"DATA": data, "region": native_engine._region_info(region)}


# -- imfit ---------------------------------------------------------------------------------------


def imfit(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """casatasks ``imfit`` (``dooff`` for the background; an estimates file for several components)."""
    prm.get_choice(params, "model", "gaussian", ("gaussian",))
    background = prm.get_bool(params, "background", False)
    n_comp = prm.get_int(params, "n_components", prm.get_int(params, "components", 1, 1, 10), 1, 10)
    plane = single_plane(params.get("chans"), view, "imfit")
    kwargs: dict[str, Any] = {"imagename": str(casa_readable(view.path)), "region": region.crtf() if region else "",
                              "chans": _chans(range(plane, plane + 1), view), "stokes": view.stokes or "",
                              "dooff": background}
    estimates = None
    if n_comp > 1:
        estimates = _write_estimates(ctx, view, region, plane, n_comp, background)
        kwargs["estimates"] = str(estimates)
    try:
        raw = _call("imfit", **kwargs)
    finally:
        if estimates is not None:
            estimates.unlink(missing_ok=True)
    results = raw.get("results", {})
    n_found = int(results.get("nelements", 0))
    if n_found == 0:
        raise Js9TaskFailed("CASA imfit failed: no component was fitted")
    scale = view.flux_scale()
    components = [_casa_component(view, results[f"component{k}"], raw, scale) for k in range(n_found)]
    fit: dict[str, Any] = {**components[0], "model": "gaussian", "n_components": n_found,
                           "background": 0.0, "background_error": 0.0,
                           "converged": bool(np.all(np.asarray(raw.get("converged", [False]))))}
    if background and "zerooff" in raw:
        fit["background"] = float(np.asarray(raw["zerooff"]["value"]).reshape(-1)[0])
        fit["background_error"] = float(np.asarray(raw["zeroofferr"]["value"]).reshape(-1)[0])
    return {"fit": fit, "components": components, "plane": plane, "pixel_origin": 1,
            "region": native_engine._region_info(region)}


def _arcsec(quantity: dict[str, Any]) -> float:
    factor = {"arcsec": 1.0, "arcmin": 60.0, "deg": 3600.0, "rad": 180.0 / math.pi * 3600.0}
    return float(quantity["value"]) * factor.get(str(quantity.get("unit", "arcsec")), 1.0)


def _casa_component(view: ImageView, comp: dict[str, Any], raw: dict[str, Any], scale: Any) -> dict[str, Any]:
    shape = comp["shape"]
    x, y = (float(v) for v in np.asarray(comp["pixelcoords"]).reshape(-1)[:2])
    per_arcsec = np.asarray(raw.get("pixelsperarcsec", [np.nan, np.nan]), dtype=float).reshape(-1)
    direction = shape["direction"]
    ra = math.degrees(float(direction["m0"]["value"])) % 360.0
    dec = math.degrees(float(direction["m1"]["value"]))
    major, minor = _arcsec(shape["majoraxis"]), _arcsec(shape["minoraxis"])
    out: dict[str, Any] = {
        "amplitude": float(comp["peak"]["value"]), "amplitude_error": float(comp["peak"]["error"]),
        "amplitude_unit": str(comp["peak"].get("unit", view.bunit)),
        "center": [x + 1.0, y + 1.0], "pixelcoords": [x, y],
        "center_world": {"ra_deg": ra, "dec_deg": dec,
                         "ra_error_arcsec": _arcsec(direction["error"]["longitude"]),
                         "dec_error_arcsec": _arcsec(direction["error"]["latitude"])},
        "major_axis": major, "minor_axis": minor, "axis_unit": "arcsec",
        "major_axis_error": _arcsec(shape["majoraxiserror"]), "minor_axis_error": _arcsec(shape["minoraxiserror"]),
        "major_axis_pixels": major * float(per_arcsec[0]), "minor_axis_pixels": minor * float(per_arcsec[0]),
        "pa": float(shape["positionangle"]["value"]) % 180.0, "pa_error": float(shape["positionangleerror"]["value"]),
    }
    flux = comp.get("flux")
    if flux is not None and scale is not None:
        out.update(flux=float(np.asarray(flux["value"]).reshape(-1)[0]),
                   flux_error=float(np.asarray(flux["error"]).reshape(-1)[0]), flux_unit=str(flux.get("unit", "Jy")))
    return out


def _write_estimates(ctx: JobContext, view: ImageView, region: Region | None, plane: int, n_comp: int,
                     background: bool) -> Path:
    """A CASA imfit estimates file from our own initial estimate (peak, x, y, FWHM major/minor, PA)."""
    sel = native_engine.select(view, region, range(plane, plane + 1))
    block = sel.read(view)[0]
    kern = ctx.kernels("fit2d")
    try:
        p0 = np.asarray(kern.estimate_gaussians(block, sel.mask, n_components=n_comp, background=background))
    except ValueError as exc:
        raise Js9TaskFailed(f"CASA imfit failed: {exc}") from None
    lines = []
    for k in range(n_comp):
        amp, x0, y0, sa, sb, theta = (float(v) for v in p0[6 * k : 6 * k + 6])
        x, y = x0 + sel.xs.start, y0 + sel.ys.start
        sky = native_engine._sky_geometry(view, x, y, theta)
        if sky is None:
            raise Js9TaskFailed("CASA imfit with several components needs a celestial WCS")
        _, _, pa, s_maj, s_min = sky
        fw = native_engine.FWHM_PER_SIGMA
        lines.append(f"{amp!r}, {x!r}, {y!r}, {fw * sa * s_maj!r}arcsec, {fw * sb * s_min!r}arcsec, {pa!r}deg")
    fd, name = tempfile.mkstemp(prefix="imfit-estimates-", suffix=".txt", dir=_workdir())
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return Path(name)


# -- imval ---------------------------------------------------------------------------------------


def imval(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """casatasks ``imval`` (box, region or the reference pixel), reshaped like the native result."""
    _, ny, nx = view.shape
    z = parse_chans(params.get("chans"), view)
    box = prm.box_in_image(params, nx, ny)
    kwargs: dict[str, Any] = {"imagename": str(casa_readable(view.path)), "stokes": view.stokes or ""}
    chans = _chans(z, view)
    kwargs["chans"] = chans if chans else "0"
    if box is not None:
        x1, y1, x2, y2 = box
        kwargs["box"] = f"{x1},{y1},{x2},{y2}"
    elif region is not None:
        if region.shape == "point":
            sel = native_engine.select(view, region, z)
            kwargs["box"] = f"{sel.xs.start},{sel.ys.start},{sel.xs.start},{sel.ys.start}"
        else:
            kwargs["region"] = region.crtf()
    else:
        sel = native_engine.select(view, None, z)
        crpix = view.image.wcs_info.wcs.wcs.crpix
        roles = view.image.wcs_info.roles
        ix = min(max(int(math.floor(crpix[roles.x] - 0.5)), 0), nx - 1)
        iy = min(max(int(math.floor(crpix[roles.y] - 0.5)), 0), ny - 1)
        kwargs["box"] = f"{ix},{iy},{ix},{iy}"
    raw = _call("imval", **kwargs)
    blc, trc = [int(v) for v in raw["blc"]], [int(v) for v in raw["trc"]]
    roles = view.image.wcs_info.roles
    bx, by = trc[roles.x] - blc[roles.x] + 1, trc[roles.y] - blc[roles.y] + 1
    bz = len(z)
    data = np.asarray(raw["data"], dtype=np.float64).reshape(bx, by, bz)
    mask = np.asarray(raw["mask"], dtype=bool).reshape(bx, by, bz)
    data, mask = np.transpose(data, (2, 1, 0)), np.transpose(mask, (2, 1, 0))
    if bz == 1:
        data, mask = data[0], mask[0]
    out: dict[str, Any] = {
        "values": [float(v) if math.isfinite(v) else None for v in data.reshape(-1).tolist()],
        "shape": list(data.shape), "mask": mask.reshape(-1).tolist(),
        "axes": ["y", "x"] if bz == 1 else ["channel", "y", "x"],
        "blc": blc, "trc": trc, "unit": str(raw.get("unit", view.bunit)), "stokes": view.stokes,
        "region": native_engine._region_info(region),
    }
    if data.size == 1:
        out["value"] = out["values"][0]
    return out


# -- specflux ------------------------------------------------------------------------------------

_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")


def specflux(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """casatasks ``specflux`` per channel (parsed from its log) plus ``imstat`` for ``flux.DATA``."""
    stats = imstat(ctx, view, region, params)["DATA"]
    data: dict[str, Any] = {"mean": stats.get("mean"), "sum": stats.get("sum"), "npts": stats.get("npts")}
    if "flux" in stats:
        data["flux"], data["flux_unit"] = stats["flux"], stats["flux_unit"]
    roles = view.image.wcs_info.roles
    if not (roles.z is not None and view.z_fixed is None and view.shape[0] > 1):
        return {"flux": {"DATA": data}, "note": "Spectral flux extraction via imstat",
                "region": native_engine._region_info(region)}
    z = parse_chans(params.get("chans"), view)
    fd, name = tempfile.mkstemp(prefix="specflux-", suffix=".log", dir=_workdir())
    os.close(fd)
    log = Path(name)
    try:
        _call("specflux", imagename=str(casa_readable(view.path)), region=region.crtf() if region else "",
              chans=_chans(z, view), stokes=view.stokes or "", logfile=str(log), overwrite=True)
        text = log.read_text()
    finally:
        log.unlink(missing_ok=True)
    rows = [m.groups() for line in text.splitlines() if (m := _ROW.match(line))]
    total = re.search(r"Total flux:\s*(\S+)\s+(\S+)", text)
    header = next((line for line in text.splitlines() if line.startswith("# Channel")), "")
    density_unit = re.search(r"Flux_density_\((\S+)\)", header)
    spectrum = {
        "channel": [int(r[0]) for r in rows], "npix": [int(r[1]) for r in rows],
        "frequency_mhz": [float(r[2]) for r in rows], "velocity_km_s": [float(r[3]) for r in rows],
        "flux_density": [float(r[4]) for r in rows],
        "flux_density_unit": density_unit.group(1) if density_unit else "Jy",
    }
    out: dict[str, Any] = {
        "flux": {"DATA": data},
        "note": "Per-channel flux over the region (CASA specflux; velocities as CASA labels them)",
        "spectrum": spectrum, "region": native_engine._region_info(region),
    }
    if total:
        out["total_flux"], out["total_flux_unit"] = float(total.group(1)), total.group(2)
    return out


# -- imview --------------------------------------------------------------------------------------


def imview(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """Contours of the plane read through the CASA image tool (its pixel mask as blanks)."""
    plane = single_plane(params.get("chans"), view, "imview")
    _, ny, nx = view.shape
    if not available():
        raise Js9BadRequest(UNAVAILABLE)
    configure_casa_offline()
    casatools = importlib.import_module("casatools")
    blc = view.casa_position(plane, 0, 0)
    trc = view.casa_position(plane, ny - 1, nx - 1)
    with _LOCK:
        ia = casatools.image()
        try:
            ia.open(str(casa_readable(view.path)))
            chunk = np.asarray(ia.getchunk(blc=blc, trc=trc, dropdeg=False), dtype=np.float64)
            good = np.asarray(ia.getchunk(blc=blc, trc=trc, dropdeg=False, getmask=True), dtype=bool)
        except Exception as exc:
            raise Js9TaskFailed(f"CASA image tool failed: {type(exc).__name__}: {exc}") from None
        finally:
            ia.done()
    roles = view.image.wcs_info.roles
    keep = [roles.x, roles.y]
    index = tuple(slice(None) if axis in keep else 0 for axis in range(chunk.ndim))
    plane_xy = np.where(good[index], chunk[index], np.nan)
    image = plane_xy.T if roles.x < roles.y else plane_xy
    result = native_engine.contours_of_plane(ctx, view, region, params, plane, image.astype(np.float32))
    result["image_source"] = "casatools image (ia.getchunk)"
    return result


TASKS = {"imstat": imstat, "imfit": imfit, "imview": imview, "specflux": specflux, "imval": imval}
