"""Independent references for the client tests: the demo files read with astropy, the wire decoded by hand."""

from __future__ import annotations

import base64
import struct
import warnings
import zlib
from functools import cache

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from app.settings import DEMO_DATA_ROOT
from tests.client.conftest import CUBE, IMAGE


def wire(text: str, compression: str | None = "none", dtype: str = "<f4") -> np.ndarray:
    """Decode a base64 payload by hand (not with the client's codec)."""
    raw = base64.b64decode(text)
    if compression == "qt-zlib":
        assert struct.unpack(">I", raw[:4])[0] == len(zlib.decompress(raw[4:]))
        raw = zlib.decompress(raw[4:])
    return np.frombuffer(raw, dtype=dtype)


@cache
def cube_data() -> np.ndarray:
    """NGC 5921 as float32 ``(z, y, x)`` (the degenerate Stokes axis dropped)."""
    return np.asarray(fits.getdata(DEMO_DATA_ROOT / CUBE)[0], dtype=np.float32)


@cache
def image_data() -> np.ndarray:
    return np.asarray(fits.getdata(DEMO_DATA_ROOT / IMAGE), dtype=np.float64)


def cube_header() -> fits.Header:
    return fits.getheader(DEMO_DATA_ROOT / CUBE)


def cube_wcs() -> WCS:
    """The cube's WCS from astropy (celestial + spectral; Stokes dropped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(cube_header()).sub([1, 2, 3])


def same_celestial(wcs: WCS, reference: WCS) -> None:
    """Two 2-D celestial WCSs agree: types, reference pixel/value, increments, and a grid of pixel → sky."""
    assert list(wcs.wcs.ctype) == list(reference.wcs.ctype)
    np.testing.assert_allclose(wcs.wcs.crpix, reference.wcs.crpix)
    np.testing.assert_allclose(wcs.wcs.crval, reference.wcs.crval)
    np.testing.assert_allclose(wcs.wcs.cdelt, reference.wcs.cdelt)
    x, y = np.meshgrid(np.arange(0, 256, 51.0), np.arange(0, 256, 37.0))
    np.testing.assert_allclose(wcs.pixel_to_world_values(x, y), reference.pixel_to_world_values(x, y),
                               rtol=0, atol=1e-9)
