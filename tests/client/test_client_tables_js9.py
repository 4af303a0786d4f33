"""Client catalogue and VBT queries, and the JS9 analysis tasks, against the files and the raw wire."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from app.settings import DEMO_DATA_ROOT
from tests.client.conftest import IMAGE
from tests.client.refs import image_data
from visivo_client import Client, parse_region


def test_catalogue_query_filters_sort_and_units(client: Client, raw_for) -> None:
    catalogue = client.catalogue("catalogue_sky.csv")
    assert catalogue.num_rows == 400 and [f["name"] for f in catalogue.fields][:3] == ["name", "ra", "dec"]
    table = catalogue.query([("flux_mjy", ">", 50), ("morphology", "=", "spiral")], sort="-flux_mjy", limit=10)
    assert isinstance(table, Table)
    reference = Table.read(DEMO_DATA_ROOT / "catalogue_sky.csv", format="ascii.csv")
    chosen = reference[(reference["flux_mjy"] > 50) & (reference["morphology"] == "spiral")]
    order = np.argsort(-np.asarray(chosen["flux_mjy"]), kind="stable")
    assert table.meta["total_rows"] == len(chosen) and table.meta["has_more"] == (len(chosen) > 10)
    assert list(table["name"]) == list(chosen["name"][order][:10])
    np.testing.assert_allclose(table["flux_mjy"], chosen["flux_mjy"][order][:10])
    answer = raw_for(client).post("/v1/catalogue/query", {
        "dataset_id": catalogue.dataset_id, "limit": 10, "sort_field": "flux_mjy", "sort_direction": "desc",
        "filters": [{"field": "flux_mjy", "op": ">", "value": "50"},
                    {"field": "morphology", "op": "=", "value": "spiral"}]})
    assert [row["name"] for row in answer["rows"]] == list(table["name"])


def test_vbt_query_columns(client: Client, raw_for) -> None:
    vbt = client.vbt("galaxies.bin")
    assert vbt.fields == ["x", "y", "z", "vx", "vy", "vz", "logmass"] and vbt.num_rows == 2000
    table = vbt.query([("logmass", ">=", 10)], sort="x", limit=5)
    columns = np.fromfile(DEMO_DATA_ROOT / "galaxies.bin", dtype="<f4").reshape(7, 2000).astype(np.float64)
    keep = columns[6] >= np.float32(10)
    order = np.argsort(columns[0][keep], kind="stable")[:5]
    np.testing.assert_array_equal(table["x"], columns[0][keep][order])
    np.testing.assert_array_equal(table["logmass"], columns[6][keep][order])
    assert table.meta["total_rows"] == int(keep.sum())
    answer = raw_for(client).post("/v1/vbt/query", {"dataset_id": vbt.dataset_id, "limit": 5, "sort_field": "x",
                                                    "filters": [{"field": "logmass", "op": ">=", "value": "10"}]})
    assert answer["returned_rows"] == len(table) == 5


def _circle_mask(shape: tuple[int, int], x: float, y: float, r: float) -> np.ndarray:
    """1-based JS9 circle → 0-based pixel centres inside or on it."""
    yy, xx = np.indices(shape)
    return (xx - (x - 1)) ** 2 + (yy - (y - 1)) ** 2 <= r * r


def test_imstat_matches_numpy_and_wire(client: Client, raw_for) -> None:
    answer = client.imstat(IMAGE, region="circle(128,128,20)")
    stats = answer["result"]["DATA"]
    pixels = image_data()[_circle_mask(image_data().shape, 128, 128, 20)]
    assert stats["npts"] == pixels.size == 1257
    assert stats["sum"] == pytest.approx(pixels.sum(), rel=1e-9)
    assert stats["max"] == pytest.approx(pixels.max(), rel=1e-7)
    raw = raw_for().post("/api/visualization/js9/analysis", {
        "task": "imstat", "image_path": IMAGE, "region": {"shape": "circle", "x": 128, "y": 128, "r": 20}})
    assert raw["result"] == answer["result"] and answer["success"] is True


def test_other_js9_tasks(client: Client, raw_for) -> None:
    raw = raw_for()
    region = {"shape": "box", "x": 129, "y": 129, "width": 30, "height": 30}
    fit = client.imfit(IMAGE, "box(129,129,30,30)")["result"]["fit"]
    reference = raw.post("/api/visualization/js9/analysis", {"task": "imfit", "image_path": IMAGE, "region": region})
    assert fit["center"] == reference["result"]["fit"]["center"]
    peak = np.unravel_index(np.argmax(image_data()), image_data().shape)
    assert fit["center"] == pytest.approx([peak[1] + 1, peak[0] + 1], abs=0.5)  # 1-based, near the brightest pixel
    contours = client.imview(IMAGE, n_levels=4)["result"]
    assert len(contours["contour_levels"]) == 4 and contours["image_shape"] == list(image_data().shape)
    flux = client.specflux(IMAGE, "circle(128,128,20)")["result"]["flux"]["DATA"]
    assert flux["sum"] == pytest.approx(image_data()[_circle_mask(image_data().shape, 128, 128, 20)].sum())
    values = client.imval(IMAGE, box="120,120,122,121")["result"]
    np.testing.assert_allclose(np.reshape(values["values"], values["shape"]), image_data()[120:122, 120:123],
                               rtol=1e-7)


def test_region_text() -> None:
    assert parse_region("circle(128,128,20)") == {"shape": "circle", "x": 128.0, "y": 128.0, "r": 20.0}
    assert parse_region("box(10,20,4,6,30)")["angle"] == 30.0
    assert parse_region("ellipse(5,5,3,2)") == {"shape": "ellipse", "x": 5.0, "y": 5.0, "rx": 3.0, "ry": 2.0}
    assert len(parse_region("polygon(1,1,10,1,10,10)")["pts"]) == 3
    for bad in ("circle(1,2)", "star(1,2,3)", "circle 1 2 3", "polygon(1,2,3,4)"):
        with pytest.raises(ValueError, match="region"):
            parse_region(bad)


def test_vbt_volume_as_cube(client: Client, live_server) -> None:
    from app.io.vbt import write_vbt  # noqa: PLC0415  (the server's writer makes the test file)

    rng = np.random.default_rng(7)
    density = rng.normal(size=(6, 5, 4)).astype(np.float32)  # (nz, ny, nx)
    live_server.output_dir.mkdir(parents=True, exist_ok=True)  # a data root of the server
    write_vbt(live_server.output_dir / "volume.bin", {"rho": density, "t": 2 * density}, grid=(4, 5, 6),
              spacing=(0.5, 0.25, 2.0))
    cube = client.vbt(str(live_server.output_dir / "volume.bin"), as_cube=True, field="t")
    assert cube.kind == "cube" and cube.shape == (6, 5, 4)
    np.testing.assert_array_equal(cube.subvolume(), 2 * density)
    assert list(cube.wcs.wcs.cdelt) == [0.5, 0.25, 2.0]
    np.testing.assert_allclose(cube.wcs.pixel_to_world_values(1, 2, 3),
                               [cube.wcs.wcs.crval[i] + (p + 1 - cube.wcs.wcs.crpix[i]) * d
                                for i, (p, d) in enumerate(zip((1, 2, 3), (0.5, 0.25, 2.0), strict=True))])
