"""The JS9 ``imfit`` task on our own kernels: 2-D Gaussian fits in a region (native engine).

Split from :mod:`app.services.js9.native_engine` (which re-exports :func:`imfit`); the fit itself is
the ``fit2d`` kernel module of the job's tree, the geometry (pixel → sky sizes and angles) is here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.compute.backend import to_host
from app.compute.dispatch import JobContext
from app.services.js9 import params as prm
from app.services.js9.errors import Js9TaskFailed
from app.services.js9.images import ImageView, single_plane
from app.services.js9.native_engine import Selection, _region_info, _to_device, check_memory, select
from app.services.js9.regions import Region
from kernel_common.constants import FWHM_PER_SIGMA


def imfit(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """Elliptical Gaussian fit(s) over the region of one plane (CASA ``imfit``)."""
    model = prm.get_choice(params, "model", "gaussian", ("gaussian",))
    background = prm.get_bool(params, "background", False)
    n_comp = prm.get_int(params, "n_components", prm.get_int(params, "components", 1, 1, 10), 1, 10)
    want_images = prm.get_bool(params, "return_images", False)
    plane = single_plane(params.get("chans"), view, "imfit")
    sel = select(view, region, range(plane, plane + 1))
    check_memory(sel, "imfit")
    kern = ctx.kernels("fit2d")
    block = sel.read(view)[0]
    dev_block, dev_mask = _to_device(ctx, block), _to_device(ctx, sel.mask)
    try:
        p0 = kern.estimate_gaussians(dev_block, dev_mask, n_components=n_comp, background=background)
    except ValueError as exc:
        raise Js9TaskFailed(f"imfit failed: {exc}") from None
    fit = kern.fit_gaussians(dev_block[None], p0[None], dev_mask, n_components=n_comp, background=background)
    fit = {k: to_host(v) for k, v in fit.items()}
    p, err = fit["params"][0], fit["errors"][0]
    if not np.all(np.isfinite(p)):
        raise Js9TaskFailed("imfit failed: the fit diverged")
    components = [_component(view, p, err, k, sel) for k in range(n_comp)]
    result_fit: dict[str, Any] = {
        **components[0], "model": model, "n_components": n_comp,
        "background": float(p[-1]) if background else 0.0,
        "background_error": float(err[-1]) if background else 0.0,
        "converged": bool(fit["converged"][0]), "iterations": int(fit["iterations"][0]),
        "chi2": float(fit["chi2"][0]), "npix": int(fit["npix"][0]),
    }
    out: dict[str, Any] = {"fit": result_fit, "components": components, "plane": plane, "pixel_origin": 1,
                           "region": _region_info(region)}
    if want_images:
        mdl = to_host(kern.gaussian_model(_to_device(ctx, p[None]), shape=block.shape, n_components=n_comp,
                                          background=background))[0]
        resid = np.where(np.isfinite(block), block - mdl, np.nan)
        out["images"] = {"blc": [sel.xs.start + 1, sel.ys.start + 1], "shape": list(block.shape),
                         "model": mdl.tolist(), "residual": resid.tolist()}
    return out


def _component(view: ImageView, p: np.ndarray, err: np.ndarray, k: int, sel: Selection) -> dict[str, Any]:
    """Physical description of Gaussian component ``k`` of a fit in the selection's box."""
    j = 6 * k
    amp, x0, y0, sa, sb, theta = (float(v) for v in p[j : j + 6])
    e_amp, e_x, e_y, e_sa, e_sb, e_th = (float(v) for v in err[j : j + 6])
    x, y = x0 + sel.xs.start, y0 + sel.ys.start
    maj_px, min_px = FWHM_PER_SIGMA * sa, FWHM_PER_SIGMA * sb
    comp: dict[str, Any] = {
        "amplitude": amp, "amplitude_error": e_amp, "amplitude_unit": view.bunit,
        "center": [x + 1.0, y + 1.0], "center_error": [e_x, e_y], "pixelcoords": [x, y],
        "major_axis_pixels": maj_px, "minor_axis_pixels": min_px,
        "major_axis_pixels_error": FWHM_PER_SIGMA * e_sa, "minor_axis_pixels_error": FWHM_PER_SIGMA * e_sb,
        "theta_pixels_deg": math.degrees(theta),
    }
    sky = _sky_geometry(view, x, y, theta)
    if sky is not None:
        ra, dec, pa, scale_major, scale_minor = sky
        comp.update(
            center_world={"ra_deg": ra, "dec_deg": dec, "ra_error_arcsec": e_x * scale_minor,
                          "dec_error_arcsec": e_y * scale_major},
            major_axis=maj_px * scale_major, minor_axis=min_px * scale_minor, axis_unit="arcsec",
            major_axis_error=FWHM_PER_SIGMA * e_sa * scale_major, minor_axis_error=FWHM_PER_SIGMA * e_sb * scale_minor,
            pa=pa, pa_error=math.degrees(e_th),
        )
    else:
        comp.update(major_axis=maj_px, minor_axis=min_px, axis_unit="pixel", pa=(math.degrees(theta) - 90.0) % 180.0,
                    pa_error=math.degrees(e_th))
    scale = view.flux_scale()
    if scale is not None:
        flux = amp * 2.0 * math.pi * sa * sb * scale[0]
        rel = math.sqrt(sum((e / v) ** 2 for e, v in ((e_amp, amp), (e_sa, sa), (e_sb, sb)) if v))
        comp.update(flux=flux, flux_error=abs(flux) * rel, flux_unit=scale[1])
    return comp


def _sky_geometry(view: ImageView, x: float, y: float, theta: float) -> tuple[float, ...] | None:
    """``(ra, dec, pa, arcsec/px along the major axis, arcsec/px along the minor axis)`` at pixel (x, y).

    The position angle is measured from north through east of the major axis direction
    ``(cos θ, sin θ)`` in pixels, from the local WCS (a one-pixel step each way).
    """
    wcs = view.image.wcs_info.wcs
    roles = view.image.wcs_info.roles
    try:
        if not wcs.has_celestial:
            return None
        cel = wcs.celestial
        lng_first = roles.x < roles.y

        def world(px: float, py: float) -> tuple[float, float]:
            pix = (px, py) if lng_first else (py, px)
            out = cel.pixel_to_world_values(*pix)
            w = [float(out[0]), float(out[1])]
            return (w[cel.wcs.lng], w[cel.wcs.lat])

        ra, dec = world(x, y)

        def step(angle: float) -> tuple[float, float]:
            lon, lat = world(x + math.cos(angle), y + math.sin(angle))
            east = ((lon - ra + 180.0) % 360.0 - 180.0) * math.cos(math.radians(dec))
            return east, lat - dec

        e_maj, n_maj = step(theta)
        e_min, n_min = step(theta + 0.5 * math.pi)
    except Exception:  # a degraded or non-celestial WCS
        return None
    pa = math.degrees(math.atan2(e_maj, n_maj)) % 180.0
    return ra, dec, pa, 3600.0 * math.hypot(e_maj, n_maj), 3600.0 * math.hypot(e_min, n_min)


