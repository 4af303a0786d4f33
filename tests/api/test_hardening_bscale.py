"""``BSCALE = 0`` is refused with a clear message (it used to be read as ``BSCALE = 1``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from app.errors import InvalidRequest
from app.io.fits_reader import open_fits_image


def _write_scaled(path: Path, raw: np.ndarray, bscale: str, bzero: float = 10.0) -> Path:
    """An int16 image with literal BSCALE/BZERO cards (written by hand: astropy would rescale on write)."""
    header = fits.Header([("SIMPLE", True), ("BITPIX", 16), ("NAXIS", 2), ("NAXIS1", raw.shape[1]),
                          ("NAXIS2", raw.shape[0])])
    header.append(fits.Card.fromstring(f"BSCALE  = {bscale:>20}"))
    header["BZERO"] = bzero
    data = raw.astype(">i2").tobytes()
    path.write_bytes(header.tostring(padding=True).encode("ascii") + data + b"\0" * (-len(data) % 2880))
    return path


def test_bscale_zero_is_refused_through_the_api(client: TestClient, data_dir: Path) -> None:
    path = _write_scaled(data_dir / "zero_scale.fits", np.arange(12, dtype=np.int16).reshape(3, 4), "0.0")
    response = client.post("/v1/datasets/open", json={"path": str(path)})
    body = response.json()
    assert response.status_code == 200 and body["valid"] is False
    assert "BSCALE" in body["error"] and "zero_scale.fits" in body["error"]


@pytest.mark.parametrize("bscale", ["0", "0.0"])
def test_bscale_zero_refused_by_reader(tmp_path: Path, bscale: str) -> None:
    path = _write_scaled(tmp_path / "z.fits", np.ones((2, 2), dtype=np.int16), bscale)
    with pytest.raises(InvalidRequest, match="BSCALE"):
        open_fits_image(path)


def test_nonzero_bscale_still_scales(tmp_path: Path) -> None:
    raw = np.arange(12, dtype=np.int16).reshape(3, 4) - 5
    path = _write_scaled(tmp_path / "s.fits", raw, "2.5", bzero=10.0)
    image = open_fits_image(path)
    try:
        plane = image.source.read()
        np.testing.assert_array_equal(np.squeeze(plane), raw * 2.5 + 10.0)  # physical = BZERO + BSCALE·raw
    finally:
        image.close()
