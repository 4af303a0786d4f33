"""An open cube or image on the server, and the products computed from it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from visivo_client import cube_tables, products
from visivo_client.codec import binary_frames, decode_array
from visivo_client.errors import VisivoError

if TYPE_CHECKING:
    from visivo_client.client import Client

Range = tuple[int, int] | None


def _channels(channels: Range) -> dict[str, int | None]:
    """``(start, end)`` inclusive channel range → the wire's ``channel_start``/``channel_end``."""
    if channels is None:
        return {}
    start, end = channels
    return {"channel_start": int(start), "channel_end": int(end)}


class Dataset:
    """A FITS image or cube opened on the server (``client.open(path)``).

    Attributes
    ----------
    dataset_id, path, kind : str
        Server id, resolved server path and kind (``image`` or ``cube``).
    shape : tuple of int
        ``(depth, height, width)`` for cubes, ``(height, width)`` for images (NumPy order).
    bunit : str
        Brightness unit (``BUNIT``).
    info : dict
        The server's whole open answer (geometry, WCS keywords, beam, warnings).
    """

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        self._client = client
        self.info = {k: v for k, v in info.items() if k not in ("valid", "error")}
        self.dataset_id: str = info["dataset_id"]
        self.path: str = info.get("path", "")
        self.kind: str = info.get("kind", "cube")
        depth = int(info.get("depth") or 1)
        plane = (int(info.get("height") or 1), int(info.get("width") or 1))
        self.shape: tuple[int, ...] = (depth, *plane) if self.kind == "cube" else plane
        self.bunit: str = info.get("bunit") or ""

    def __repr__(self) -> str:
        return f"<Dataset {self.dataset_id} {self.kind} {self.shape} {self.bunit!r} {self.path}>"

    # ------------------------------------------------------------------ metadata
    @property
    def beam(self) -> dict[str, Any] | None:
        """Beam as the server reports it (major/minor in arcsec, pa in degrees), or ``None``."""
        return self.info.get("beam")

    @cached_property
    def header(self) -> fits.Header:
        """The file's primary header (``/v1/files/header``)."""
        return self._client.header(self.path)

    @cached_property
    def wcs(self) -> WCS:
        """The WCS of the array the server serves: celestial (+ spectral for cubes) axes of the header.

        Degenerate axes (Stokes) are dropped, as the server drops them. Built with astropy from the
        file's header; when there is none (e.g. a VBT volume), from the ``ctype/crval/cdelt/crpix/cunit``
        arrays of the open answer.
        """
        try:
            full = products.quiet_wcs(self.header)
        except (VisivoError, ValueError, KeyError):  # no FITS header (a VBT volume): the open answer's keywords
            full = None
        if full is not None and full.has_celestial:
            axes = [full.wcs.lng + 1, full.wcs.lat + 1]
            if self.kind == "cube" and full.wcs.spec >= 0:
                axes.append(full.wcs.spec + 1)
            return full.sub(axes)
        ctype = self.info.get("ctype") or []
        wcs = WCS(naxis=len(ctype) or 2)
        for key in ("ctype", "cunit", "crval", "crpix", "cdelt"):
            if self.info.get(key):
                setattr(wcs.wcs, key, self.info[key])
        wcs.wcs.set()
        return wcs

    @property
    def celestial_wcs(self) -> WCS:
        """The 2-D celestial WCS (the maps' WCS)."""
        return self.wcs.celestial if self.wcs.has_celestial else self.wcs.sub([1, 2])

    def spectral_axis(self) -> u.Quantity:
        """World value of every channel from the WCS: km/s for velocity axes, else the WCS's SI unit (Hz, m)."""
        wcs = self.wcs
        if self.kind != "cube" or wcs.wcs.spec < 0:
            raise ValueError("This dataset has no spectral axis.")
        spectral = wcs.sub([wcs.wcs.spec + 1])
        values = spectral.pixel_to_world_values(np.arange(self.shape[0], dtype=float))
        values = np.asarray(values, dtype=np.float64)
        ctype = spectral.wcs.ctype[0]
        if ctype.startswith(("VRAD", "VOPT", "VELO")):
            return (values * u.m / u.s).to(u.km / u.s)
        return values * u.Unit(spectral.wcs.cunit[0] or "")

    # ------------------------------------------------------------------ arrays
    def _array(self, route: str, body: dict[str, Any]) -> np.ndarray:
        answer = self._client._post(route, {"dataset_id": self.dataset_id,
                                            "compression": self._client.compression, **body})
        shape = tuple(int(answer[k]) for k in ("depth", "height", "width") if k in answer)
        return decode_array(answer["data_base64"], answer.get("compression"), shape=shape)

    def slice(self, z: int, axis: str = "z") -> np.ndarray:
        """One plane (``z`` = channel index, 0-based) as a float32 array ``(y, x)``; NaN = blank."""
        return self._array("/v1/cube/slice", {"axis": axis, "index": int(z)})

    def subvolume(self, *, x: Range = None, y: Range = None, channels: Range = None) -> np.ndarray:
        """Inclusive, clamped sub-volume as a float32 array ``(z, y, x)`` (``None`` = the whole axis)."""
        body: dict[str, Any] = _channels(channels)
        for name, bounds in (("x", x), ("y", y)):
            if bounds is not None:
                body[f"{name}0"], body[f"{name}1"] = int(bounds[0]), int(bounds[1])
        return self._array("/v1/cube/subvolume", body)

    def preview(self, downsample: int = 4) -> np.ndarray:
        """Strided decimation of the whole cube (every ``downsample``-th voxel per axis), ``(z, y, x)``."""
        return self._array("/v1/cube/preview", {"downsample": int(downsample)})

    # ------------------------------------------------------------------ products
    def moment(self, order: int, channels: Range = None, *, convention: str = "reference",
               threshold: float | None = None, rms: float | None = None, snr: float | None = None,
               includepix: Sequence[float] | None = None, excludepix: Sequence[float] | None = None,
               rest_freq_hz: float | None = None, save: bool = True, uncertainty: bool = False,
               mask: dict[str, Any] | None = None, progress: bool | None = None) -> fits.PrimaryHDU:
        """Moment map (server task ``moment``) as a PrimaryHDU.

        ``convention="reference"``: 0 ΣI·Δv, 1 ΣI·v·Δv/M0, 2 variance, 3 skewness, 4 excess kurtosis,
        5 μ₅/σ⁵, 6 RMS, 8 max, 10 min, over voxels ≥ ``threshold``; ``"casa"``: CASA immoments'
        numbering (−1 … 11). With ``save`` (default) the header is the one the server wrote with the
        product (2-D celestial WCS, ``BUNIT``, beam, ``HISTORY`` provenance) and ``output_path`` names
        the file on the server; otherwise the same content is built here from the answer. With
        ``uncertainty`` (orders 0-2) ``hdu.meta["sigma"]`` is the propagated 1σ map (float32, the map's
        unit) and ``hdu.meta["noise_per_channel"]`` the noise used (the given ``rms``, else estimated).
        ``mask`` is a noise-aware mask spec (``{"method": "smooth_and_clip", "snr": 4.0, ...}``; see the
        server's README): only its voxels count, and ``hdu.meta["masks"]`` says what it kept.
        """
        body = {"dataset_id": self.dataset_id, "order": int(order), **_channels(channels),
                "uncertainty": bool(uncertainty), "mask": mask,
                "convention": convention, "threshold": threshold, "rms": rms, "snr": snr,
                "includepix": list(includepix) if includepix is not None else None,
                "excludepix": list(excludepix) if excludepix is not None else None,
                "rest_freq_hz": rest_freq_hz, "save": save, "compression": self._client.compression}
        answer = self._client._task("moment", body, progress, f"moment {order}")
        data = decode_array(answer["data_base64"], answer.get("compression"),
                            shape=(int(answer["height"]), int(answer["width"])))
        header = self._client.header(answer["output_path"]) if answer.get("output_path") else None
        history = [f"visivo-gpu-server moment order={order} ({answer.get('moment_name')})",
                   f"convention={answer.get('convention')} channels={answer.get('channel_start')}"
                   f"..{answer.get('channel_end')}",
                   f"spectral range {answer.get('spectral_range')} {answer.get('spectral_axis_unit')}",
                   f"threshold={answer.get('threshold_used')} include={answer.get('include')} "
                   f"exclude={answer.get('exclude')}", f"source={self.path}"]
        hdu = products.map_hdu(data, celestial=self.celestial_wcs, bunit=answer.get("moment_unit") or "",
                               history=history, beam=self.info, header=header)
        hdu.meta = {k: v for k, v in products.metadata(answer).items() if k != "sigma_base64"}  # type: ignore
        if answer.get("sigma_base64"):
            hdu.meta["sigma"] = decode_array(answer["sigma_base64"], answer.get("compression"),  # type: ignore
                                             shape=data.shape)
        return hdu

    def moments(self, orders: Sequence[int], channels: Range = None, *, convention: str = "reference",
                threshold: float | None = None, rms: float | None = None, snr: float | None = None,
                includepix: Sequence[float] | None = None, excludepix: Sequence[float] | None = None,
                uncertainty: bool = False, rest_freq_hz: float | None = None, save: bool = False,
                mask: dict[str, Any] | None = None, progress: bool | None = None) -> fits.HDUList:
        """Several moment maps from one pass over the cube (``orders``), with their σ maps when asked.

        Returns an HDUList: an empty primary HDU with ``HISTORY`` provenance, then ``MOM<k>`` per order
        and ``SIG<k>`` per σ map (orders 0-2 with ``uncertainty``), each with the 2-D celestial WCS,
        ``BUNIT`` and the beam (the layout of the FITS the server saves with ``save``; ``meta["output_path"]``
        then names it). ``meta`` holds the rest of the answer (``noise_per_channel``, ``noise_source``, …).
        Parameters as :meth:`moment`.
        """
        body = {"dataset_id": self.dataset_id, "orders": [int(k) for k in orders], **_channels(channels),
                "convention": convention, "threshold": threshold, "rms": rms, "snr": snr,
                "uncertainty": bool(uncertainty), "mask": mask,
                "includepix": list(includepix) if includepix is not None else None,
                "excludepix": list(excludepix) if excludepix is not None else None,
                "rest_freq_hz": rest_freq_hz, "save": save, "compression": self._client.compression}
        answer = self._client._task("moment", body, progress, f"moments {list(orders)}")
        history = [f"visivo-gpu-server moments orders={answer.get('orders')} convention={answer.get('convention')}",
                   f"channels={answer.get('channel_start')}..{answer.get('channel_end')} source={self.path}",
                   f"threshold={answer.get('threshold_used')} noise={answer.get('noise_source')}"]
        return cube_tables.moments_hdulist(answer, celestial=self.celestial_wcs, beam=self.info, history=history)

    def linewidth(self, channels: Range = None, *, map: str = "fwhm", threshold: float | None = None,  # noqa: A002
                  snr: float | None = None, rest_freq_hz: float | None = None,
                  mask: dict[str, Any] | None = None, progress: bool | None = None) -> fits.PrimaryHDU:
        """Line-width map (server task ``linewidth``): ``map="fwhm"`` (2.3548·σ of a Gaussian fit) or ``"ew"``.

        ``threshold`` masks voxels below it; ``snr`` is the fit's SNR cut (server default 3); ``mask`` a
        noise-aware mask spec (as :meth:`moment`). Both maps are computed and cached on the server, so
        asking for the other one is immediate.
        """
        if map not in ("fwhm", "ew"):
            raise ValueError("map must be 'fwhm' or 'ew'")
        body = {"dataset_id": self.dataset_id, **_channels(channels), "rest_freq_hz": rest_freq_hz, "snr": snr,
                "mask_enabled": threshold is not None, "threshold_value": threshold, "mask": mask}
        answer = self._client._task("linewidth", body, progress, "linewidth")
        data = decode_array(answer[f"{map}_base64"], shape=(int(answer["height"]), int(answer["width"])))
        history = [f"visivo-gpu-server linewidth {map} (FWHM = 2.3548 sigma of a Gaussian fit; EW = sum(I dv)/peak)",
                   f"channels={answer.get('channel_start')}..{answer.get('channel_end')} "
                   f"snr_cut={answer.get('snr_cut')} threshold={answer.get('threshold_used')}",
                   f"computed_on={answer.get('computed_on')} source={self.path}"]
        hdu = products.map_hdu(data, celestial=self.celestial_wcs, bunit=answer.get(f"{map}_unit") or "",
                               history=history, beam=self.info)
        hdu.meta = products.metadata(answer)  # type: ignore[attr-defined]
        return hdu

    def linewidth_frames(self, channels: Range = None, *, method: str | None = None) -> dict[str, np.ndarray]:
        """``/v1/spectral/linewidth/binary`` decoded: ``{"fwhm": map, "ew": map}`` (or the map ``method`` picks)."""
        payload = self._client._transport.send("POST", "/v1/spectral/linewidth/binary", raw=True, json_body={
            "dataset_id": self.dataset_id, **_channels(channels), "method": method})
        names = ["fwhm", "ew"] if method is None else [method]
        return dict(zip(names, binary_frames(payload), strict=True))

    def linefit(self, channels: Range = None, *, components: int = 1, threshold: float | None = None,
                snr: float | None = None, rest_freq_hz: float | None = None, save: bool = False,
                progress: bool | None = None) -> fits.HDUList:
        """Gaussian line-fit maps (server task ``linefit``) as an HDUList.

        An empty primary HDU with ``HISTORY``, then one ImageHDU per map and component:
        ``AMPLITUDE``, ``CENTRE``, ``SIGMA`` and their ``*_ERR`` (1σ, curve_fit's default scaling) with
        ``EXTVER`` = component, then ``REDUCED_CHI2`` (and ``NCOMP`` with ``components=2``), each
        with the 2-D celestial WCS and ``BUNIT`` — the layout of the file the server writes with
        ``save`` (``meta["output_path"]``).
        """
        body = {"dataset_id": self.dataset_id, **_channels(channels), "components": int(components),
                "mask_enabled": threshold is not None, "threshold_value": threshold, "snr": snr,
                "rest_freq_hz": rest_freq_hz, "save": save}
        answer = self._client._task("linefit", body, progress, f"linefit {components}")
        history = [f"visivo-gpu-server linefit components={answer.get('components')} "
                   f"channels={answer.get('channel_start')}..{answer.get('channel_end')} source={self.path}"]
        return cube_tables.linefit_hdulist(answer, celestial=self.celestial_wcs, beam=self.info, history=history)

    def noise(self, *, x: Range = None, y: Range = None, channels: Range = None) -> Table:
        """Per-channel MAD and σ = 1.4826·MAD over a region (``/v1/cube/noise``) as a table."""
        body: dict[str, Any] = {"dataset_id": self.dataset_id, **_channels(channels)}
        for name, bounds in (("x", x), ("y", y)):
            if bounds is not None:
                body[f"{name}0"], body[f"{name}1"] = int(bounds[0]), int(bounds[1])
        return products.noise_table(self._client._post("/v1/cube/noise", body), self.bunit)

    def pv(self, path: Sequence[Sequence[float]], width: int = 3, *, world: bool = False, channels: Range = None,
           spatial_bin: int = 1, spectral_bin: int = 1, progress: bool | None = None) -> fits.PrimaryHDU:
        """Position–velocity diagram along a polyline (server task ``pv``).

        ``path`` is a list of vertices: 0-based pixel ``(x, y)``, or ``(ra, dec)`` in degrees with
        ``world=True``. ``width`` is in pixels, averaged across the path. The HDU's axis 1 is the
        offset along the path in arcsec, axis 2 the spectral axis (km/s for velocity cubes).
        ``channels`` limits the diagram to an inclusive channel range; ``spatial_bin`` /
        ``spectral_bin`` average blocks of samples × channels on the server (the axes then step by
        the bins' mean offsets and coordinates).
        """
        vertices = [[float(a), float(b)] for a, b in path]
        body = {"dataset_id": self.dataset_id, "width_pixels": int(width), "compression": self._client.compression,
                ("points_ra_dec" if world else "vertices"): vertices, **_channels(channels),
                "spatial_bin": int(spatial_bin), "spectral_bin": int(spectral_bin)}
        answer = self._client._task("pv", body, progress, "pv")
        hdu = products.pv_hdu(answer, self.path)
        hdu.meta = products.metadata(answer)  # type: ignore[attr-defined]
        return hdu

    def baseline(self, line_free: Sequence[Sequence[int]] | Sequence[int], order: int = 1, *,
                 method: str = "polynomial", channels: Range = None, progress: bool | None = None) -> Dataset:
        """Subtract a per-pixel Legendre polynomial (or median) fitted to the line-free channels.

        ``line_free`` is a list of inclusive ``(start, end)`` ranges or of channel indices. Returns
        the new cube (a dataset of the same session, written on the server); ``info`` carries the
        server's answer (``rms_before``, ``rms_after``, ``fit_channels``, ``output_path``).
        """
        ranges = [list(map(int, r)) if isinstance(r, Sequence) else int(r) for r in line_free]
        body = {"session_id": self._client.session_id, "dataset_id": self.dataset_id, **_channels(channels),
                "poly_order": int(order), "method": method, "line_free_channels": ranges}
        answer = self._client._task("baseline", body, progress, "baseline")
        new = self._client.dataset(answer["new_dataset_id"])
        new.info["baseline"] = products.metadata(answer)
        return new

    def isosurface(self, threshold: float, *, step: int = 1, progress: bool | None = None) -> products.Mesh:
        """Marching-cubes mesh at ``threshold`` (server task ``isosurface``), in voxel coordinates."""
        body = {"dataset_id": self.dataset_id, "threshold": float(threshold), "step": int(step),
                "compression": self._client.compression}
        return products.mesh(self._client._task("isosurface", body, progress, "isosurface"))

    # ------------------------------------------------------------------ regions (DS9 / CRTF)
    def _regions(self, route: str, regions: str | None, region_file: str | None, fmt: str | None,
                 channels: Range, **extra: Any) -> dict[str, Any]:
        if (regions is None) == (region_file is None):
            raise ValueError("give either regions (DS9/CRTF text) or region_file (a path on the server)")
        body = {"dataset_id": self.dataset_id, "regions": regions, "region_file": region_file, "format": fmt,
                **_channels(channels), **extra}
        return self._client._post(route, body)

    def region_spectrum(self, regions: str | None = None, *, region_file: str | None = None, format: str | None = None,  # noqa: A002
                        channels: Range = None, rest_freq_hz: float | None = None) -> list[Table]:
        """Sum and mean spectrum in each DS9/CRTF region (``/v1/cube/region_spectrum``): one table per region.

        ``regions`` is region text (DS9 ``image`` coordinates 1-based, CRTF ``pix`` 0-based, sky regions
        through the WCS), or ``region_file`` a region file on the server (inside its data roots). Columns
        ``channel``, ``spectral``, ``sum`` (data unit · pixel), ``mean``, ``count``; ``meta`` has the region's
        ``index``, ``shape``, ``num_pixels``, ``bbox``.
        """
        answer = self._regions("/v1/cube/region_spectrum", regions, region_file, format, channels,
                               rest_freq_hz=rest_freq_hz)
        return cube_tables.region_spectra_tables(answer)

    def region_stats(self, regions: str | None = None, *, region_file: str | None = None, format: str | None = None,  # noqa: A002
                     channels: Range = None) -> Table:
        """CASA imstat statistics per region over the channels (``/v1/cube/region_stats``): one row per region."""
        return cube_tables.region_stats_table(
            self._regions("/v1/cube/region_stats", regions, region_file, format, channels))

    def region_noise(self, regions: str | None = None, *, region_file: str | None = None, format: str | None = None,  # noqa: A002
                     channels: Range = None) -> list[Table]:
        """Per-channel median, MAD and σ = 1.4826·MAD inside each region (``/v1/cube/noise`` with regions)."""
        answer = self._regions("/v1/cube/noise", regions, region_file, format, channels)
        return cube_tables.region_noise_tables(answer, self.bunit)

    def close(self) -> None:
        """Close the dataset on the server."""
        self._client._transport.delete(f"/v1/datasets/{self.dataset_id}")

