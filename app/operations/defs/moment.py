"""Moment maps in the API reference's convention and in CASA immoments' convention."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from app.compute.capabilities import Capability
from app.errors import InvalidRequest
from app.io.spectral import velocity_options
from app.operations.base import Call, Operation, Plan, Route
from app.operations.models import ArrayPayload, DatasetRequest, MaskInfo, MaskOptions, example
from app.services import masking, moments
from app.services.cube_reads import clamp_range, require_cube
from app.services.encoding import check_compression


class MomentRequest(DatasetRequest, MaskOptions):
    """A moment map over an inclusive channel range; `order` and `moment_order` are synonyms."""

    model_config = example(dataset_id="ds_0123456789ab", order=0, channel_start=5, channel_end=50)
    order: int | None = Field(None, description="Moment order (reference: 0–6, 8, 10; casa: −1…11).")
    moment_order: int | None = Field(None, description="Synonym of `order` (desktop client spelling).")
    channel_start: int | None = Field(None, description="First channel (0-based, inclusive); default 0.")
    channel_end: int | None = Field(None, description="Last channel (inclusive); default the last one.")
    convention: str = Field("reference", description="`reference` (API reference numbering) or `casa` (immoments).")
    mask_enabled: bool = Field(False, description="Use `threshold_value` as the mask threshold.")
    threshold_value: float | None = Field(None, description="Mask threshold (data unit) when `mask_enabled`.")
    threshold: float | None = Field(None, description="Mask: voxels ≥ threshold (data unit) count; wins over others.")
    rms: float | None = Field(None, description="Noise (data unit): mask at `snr·rms` when no threshold is given.")
    snr: float = Field(3.0, gt=0, description="Multiple of `rms` for the mask.")
    includepix: list[float] | float | None = Field(None, description="CASA include range `[lo, hi]` (data unit).")
    excludepix: list[float] | float | None = Field(None, description="CASA exclude range `[lo, hi]` (data unit).")
    rest_freq_hz: float | None = Field(None, description="Rest frequency (Hz); wins over the header's RESTFRQ.")
    velocity_convention: str | None = Field(
        None, description="`radio` (default), `optical` or `relativistic`: velocity from frequency/wavelength.")
    save: bool = Field(False, description="Also write the map as FITS into the output directory "
                                          "(several orders or σ maps: one multi-extension FITS).")
    orders: list[int] | None = Field(
        None, description="Several orders in one pass over the cube (either convention), e.g. `[0, 1, 2, 8]`; "
                          "answered in `maps` (the first order also at the top level). Not with `order`.")
    uncertainty: bool = Field(
        False, description="Also return propagated 1σ maps (`sigma_base64`) of orders 0, 1, 2 (bettermoments "
                           "formulas); noise = `rms` (data unit) if given, else 1.4826·MAD of every channel.")


class MomentMap(BaseModel):
    """One map of a multi-order answer."""

    order: int = Field(description="Moment order (in the request's convention).")
    moment_name: str = Field(description="What the order means.")
    moment_unit: str = Field(description="Unit of the map (and of its σ map).")
    range_min: float | None = Field(None, description="Smallest finite value (`moment_unit`); null when none.")
    range_max: float | None = Field(None, description="Largest finite value (`moment_unit`); null when none.")
    data_base64: str = Field(description="Base64 of little-endian float32, `height × width`, row 0 first.")
    sigma_base64: str | None = Field(None, description="Propagated 1σ map (same layout and unit); orders 0-2 "
                                                       "with `uncertainty`, else null.")
    sigma_range_min: float | None = Field(None, description="Smallest finite σ (`moment_unit`).")
    sigma_range_max: float | None = Field(None, description="Largest finite σ (`moment_unit`).")


class MomentResponse(ArrayPayload):
    """A moment map (`height × width` float32, row 0 = FITS y 0)."""

    order: int = Field(description="Moment order computed.")
    moment_order: int = Field(description="Same as `order`.")
    convention: str = Field(description="`reference` or `casa`.")
    moment_name: str = Field(description="What the order means, e.g. `integrated intensity`.")
    channel_start: int = Field(description="First channel used (inclusive).")
    channel_end: int = Field(description="Last channel used (inclusive).")
    spectral_range: list[float] = Field(description="[min, max] spectral coordinate (`spectral_axis_unit`).")
    spectral_axis_unit: str = Field(description="Unit of the spectral coordinate: km/s for velocity, else Hz/m.")
    moment_unit: str = Field(description="Unit of the map, e.g. `Jy/beam km/s` (order 0), `km/s` (order 1).")
    bunit: str = Field("", description="The cube's BUNIT.")
    threshold_used: float | None = Field(None, description="Mask threshold applied (data unit), null for none.")
    output_path: str | None = Field(None, description="Path of the saved FITS map when `save` was true.")
    kernel: str | None = Field(None, description="`numba` (compiled CPU), `numpy` (CPU oracle) or `cupy` (GPU).")
    orders: list[int] | None = Field(None, description="The orders computed when `orders` was given.")
    maps: list[MomentMap] | None = Field(None, description="One entry per requested order (`orders` only).")
    sigma_base64: str | None = Field(None, description="1σ map of the top-level order with `uncertainty`.")
    noise_per_channel: list[float] | None = Field(
        None, description="Noise σ_i used per channel of the range (data unit), with `uncertainty`.")
    noise_source: str | None = Field(None, description="`request` (the given `rms`) or how it was estimated.")
    masks: list[MaskInfo] | None = Field(None, description="The noise-aware mask used, when `mask` was given.")


def _pix_range(values: list[float] | float | None, name: str) -> tuple[float, ...] | None:
    """CASA includepix/excludepix as given (``[-1]``/``-1`` none, ``[x]`` means ``[-|x|, |x|]``, ``[lo, hi]``)."""
    if values is None:
        return None
    items = [values] if isinstance(values, (int, float)) else list(values)
    if not 1 <= len(items) <= 2 or not all(np.isfinite(v) for v in items):
        raise InvalidRequest(f"{name} must be a single value or [lo, hi].")
    return tuple(float(v) for v in items)


def _orders(order: int | None, orders: list[int] | None) -> tuple[int, ...] | None:
    """The `orders` list in request order without repeats (None when not given)."""
    if orders is None:
        if order is None:
            raise InvalidRequest("Missing moment order ('order', 'moment_order' or 'orders').")
        return None
    if order is not None:
        raise InvalidRequest("Give 'order' or 'orders', not both.")
    if not orders:
        raise InvalidRequest("'orders' must list at least one moment order.")
    return tuple(dict.fromkeys(int(k) for k in orders))


class Moment(Operation):
    """Moment map over an inclusive channel range (see the order table in the README).

    The reference convention runs the fused `moments` kernel; `convention: "casa"` runs the
    `casa_moments` kernel (immoments numbering and definitions).
    """

    name = "moment"
    tag = "products"
    capability = Capability(
        kernels=("moments", "casa_moments", "moment_errors", "noise", "smooth_clip"), tier="heavy", gpu_kernel=True,
        chunking="y-slab", bytes_per_voxel=24.0, distributable=True,
        note="fused single pass, float64 accumulation; CASA numbering via casa_moments",
    )
    Request = MomentRequest
    Response = MomentResponse
    routes = (Route("POST", "/v1/products/moment", "Moment map"),)

    def plan(self, call: Call, body: MomentRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        source = require_cube(dataset)
        order = body.moment_order if body.moment_order is not None else body.order
        orders = _orders(order, body.orders)
        order = orders[0] if order is None else order
        convention = body.convention.lower()
        if convention not in ("reference", "casa"):
            raise InvalidRequest("convention must be 'reference' or 'casa'.")
        allowed = moments.CASA_ORDERS if convention == "casa" else moments.REFERENCE_ORDERS
        for k in orders or (order,):
            if k not in allowed:
                raise InvalidRequest(f"Unsupported moment order {k} for the {convention} convention "
                                     f"(supported: {', '.join(map(str, allowed))}).")
        if body.uncertainty and not set(orders or (order,)) & {0, 1, 2}:
            raise InvalidRequest("uncertainty needs order 0, 1 or 2 among the requested orders.")
        if body.channel_start is not None and body.channel_end is not None and body.channel_start > body.channel_end:
            raise InvalidRequest("Invalid channel range.")
        c0, c1 = clamp_range(body.channel_start, body.channel_end, source.shape[0], "channel")
        threshold = moments.resolve_threshold(threshold=body.threshold, mask_enabled=body.mask_enabled,
                                              threshold_value=body.threshold_value, rms=body.rms, snr=body.snr)
        include = _pix_range(body.includepix, "includepix")
        exclude = _pix_range(body.excludepix, "excludepix")
        if convention == "casa" and threshold is not None and include is None:
            include = (threshold, float(np.finfo(np.float32).max))
        if include is not None and exclude is not None:
            raise InvalidRequest("Give includepix or excludepix, not both (CASA rule).")
        params = moments.MomentParams(order, convention, c0, c1, threshold if convention == "reference" else None,
                                      include, exclude, **velocity_options(body), orders=orders,
                                      uncertainty=body.uncertainty,
                                      noise_rms=float(body.rms) if body.uncertainty and body.rms is not None else None)
        comp = check_compression(body.compression)
        mask = masking.mask_request(dataset, body)
        resident = call.resident(dataset)
        output_dir = call.runtime.settings.output_dir
        return Plan([dataset], {**params.__dict__, "save": body.save, "compression": comp,
                                **({"mask": mask.key()} if mask else {})},
                    job=lambda ctx: moments.moment_product(ctx, dataset, params, save=body.save,
                                                           output_dir=output_dir, compression=comp,
                                                           resident=resident(ctx), mask=mask))
