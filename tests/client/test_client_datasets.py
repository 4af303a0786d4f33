"""Client: open, header, WCS, slices, sub-volumes and previews against the file and the raw wire."""

from __future__ import annotations

import numpy as np
import pytest

from tests.client.conftest import CUBE, IMAGE
from tests.client.refs import cube_data, cube_header, cube_wcs, image_data, same_celestial, wire
from visivo_client import Client, Dataset


def test_open_geometry_units_and_wcs(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    assert isinstance(ds, Dataset) and ds.kind == "cube"
    assert ds.shape == cube_data().shape == (56, 256, 256)
    assert ds.bunit == cube_header()["BUNIT"] == "Jy/beam"
    assert client.session_id and ds.info["session_id"] == client.session_id
    raw = raw_for(client).get(f"/v1/datasets/{ds.dataset_id}").json()
    assert raw["beam_major"] == ds.beam["major"] == pytest.approx(cube_header()["BMAJ"] * 3600)
    reference = cube_wcs()
    assert ds.wcs.naxis == 3 and list(ds.wcs.wcs.ctype) == list(reference.wcs.ctype)
    np.testing.assert_allclose(ds.wcs.wcs.cdelt, reference.wcs.cdelt)
    same_celestial(ds.celestial_wcs, reference.celestial)
    # the spectral axis in km/s from the WCS, and the server's own keywords agree with it
    velocity = ds.spectral_axis()
    assert str(velocity.unit) == "km / s" and velocity.shape == (56,)
    expected = reference.spectral.pixel_to_world_values(np.arange(56.0)) / 1000.0
    np.testing.assert_allclose(velocity.value, expected, rtol=1e-12)
    assert raw["crval"][2] / 1000.0 == pytest.approx(velocity.value[0])


def test_header_is_the_files(client: Client) -> None:
    header = client.header(CUBE)
    reference = cube_header()
    for key in ("NAXIS1", "NAXIS3", "CTYPE3", "CDELT3", "CRVAL1", "BMAJ", "RESTFRQ"):
        assert header[key] == reference[key]


def test_slice_subvolume_preview_match_file_and_wire(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    data = cube_data()
    raw = raw_for(client)
    plane = ds.slice(30)
    assert plane.dtype == np.float32 and plane.shape == (256, 256)
    np.testing.assert_array_equal(plane, data[30])
    answer = raw.post("/v1/cube/slice", {"dataset_id": ds.dataset_id, "index": 30})
    np.testing.assert_array_equal(plane.ravel(), wire(answer["data_base64"]))
    sub = ds.subvolume(x=(100, 140), y=(90, 120), channels=(20, 35))
    np.testing.assert_array_equal(sub, data[20:36, 90:121, 100:141])
    preview = ds.preview(4)
    np.testing.assert_array_equal(preview, data[::4, ::4, ::4])


def test_uncompressed_transfer_decodes_the_same(live_server, client: Client) -> None:
    with Client(live_server.url, live_server.token, compression="none", progress=False) as plain:
        a = plain.open(CUBE).subvolume(x=(120, 130), y=(120, 130), channels=(25, 30))
    b = client.open(CUBE).subvolume(x=(120, 130), y=(120, 130), channels=(25, 30))
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and a.shape == (6, 11, 11)


def test_image_dataset(client: Client) -> None:
    image = client.open(IMAGE)
    assert image.kind == "image" and image.shape == image_data().shape
    np.testing.assert_array_equal(image.slice(0), image_data().astype(np.float32))
    assert image.wcs.naxis == 2 and image.wcs.has_celestial
