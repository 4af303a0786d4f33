"""VBT routes: round trips for every scalar type, byte order and kind; header and size errors;
queries against NumPy; a volume opened as a cube on the cube and product routes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.errors import InvalidRequest
from app.io.vbt import parse_header, write_vbt
from app.services.encoding import decode_array
from tests.api.conftest import decode

GRID = (6, 5, 4)  # nx, ny, nz


def _columns(kind: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    if kind == "volume":
        nx, ny, nz = GRID
        rho = rng.normal(size=(nz, ny, nx))
        return {"rho": rho, "temp": rho * 10 + 100}
    n = 500
    x = rng.uniform(-50, 50, n)
    return {"X": x, "Y": rng.uniform(-50, 50, n), "Z": np.round(x / 10), "Mass": rng.lognormal(10, 1, n)}


def _open(client: TestClient, path: Path | str, **extra) -> dict:
    return client.post("/v1/vbt/open", json={"path": str(path), **extra}).json()


def _query(client: TestClient, opened: dict, **body) -> dict:
    return client.post("/v1/vbt/query", json={"dataset_id": opened["dataset_id"], **body},
                       headers={"X-Visivo-Session": opened["session_id"]}).json()


def _decoded(res: dict) -> dict[str, np.ndarray]:
    """``columns``: field → base64 little-endian float64."""
    return {name: decode_array(b64, res.get("compression") or "none", dtype="<f8")
            for name, b64 in res["columns"].items()}


@pytest.mark.parametrize("kind", ["point", "volume"])
@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("scalar", ["float", "double"])
def test_round_trip(client: TestClient, data_dir: Path, kind: str, endian: str, scalar: str) -> None:
    columns = _columns(kind)
    bin_path = data_dir / f"t_{kind}_{endian}_{scalar}.bin"
    head = write_vbt(bin_path, columns, scalar_type=scalar, endian=endian,
                     grid=GRID if kind == "volume" else None, spacing=(0.5, 1.0, 2.0))
    dtype = np.float32 if scalar == "float" else np.float64
    for path in (bin_path, head):
        opened = _open(client, path)
        assert opened["valid"], opened
        assert opened["kind"] == kind and opened["scalar_type"] == scalar and opened["endian"] == endian
        assert opened["fields"] == list(columns)
        n = next(iter(columns.values())).size
        assert opened["num_rows"] == n
        if kind == "volume":
            assert opened["dimensions"] == list(GRID) and opened["spacing"] == [0.5, 1.0, 2.0]
        res = _query(client, opened, limit=n + 10)
        assert res["valid"] and res["total_rows"] == n and res["returned_rows"] == n == res["num_rows"]
        assert res["field_names"] == list(columns)
        for name, values in _decoded(res).items():
            expected = columns[name].reshape(-1).astype(dtype).astype(np.float64)
            np.testing.assert_array_equal(values, expected)


def test_query_filters_sort_paging_against_numpy(client: TestClient, data_dir: Path) -> None:
    columns = _columns("point")
    write_vbt(data_dir / "p.bin", columns, scalar_type="float", endian="big")
    opened = _open(client, data_dir / "p.bin")
    f32 = {k: v.astype(np.float32).astype(np.float64) for k, v in columns.items()}
    filters = [{"field": "X", "op": ">", "value": "-20.5"}, {"field": "Mass", "op": "<=", "value": "40000"}]
    mask = (f32["X"] > -20.5) & (f32["Mass"] <= 40000)
    idx = np.flatnonzero(mask)
    order = idx[np.lexsort((idx, -f32["Z"][idx]))]  # ties on the rounded Z broken by row order
    got = {name: [] for name in ("Z", "Mass")}
    offset = 0
    while True:
        res = _query(client, opened, filters=filters, sort_field="Z", sort_direction="desc", limit=37,
                     offset=offset, fields=["Z", "Mass"])
        assert res["valid"] and res["total_rows"] == idx.size
        assert res["field_names"] == ["Z", "Mass"]
        for name, values in _decoded(res).items():
            got[name].append(values)
        offset += res["returned_rows"]
        if offset >= res["total_rows"]:
            break
    np.testing.assert_array_equal(np.concatenate(got["Mass"]), f32["Mass"][order])
    np.testing.assert_array_equal(np.concatenate(got["Z"]), f32["Z"][order])
    sub = client.post("/v1/vbt/subset", json={"dataset_id": opened["dataset_id"], "max_rows": 10},
                      headers={"X-Visivo-Session": opened["session_id"]}).json()
    assert sub["valid"] and sub["returned_rows"] == 10
    np.testing.assert_array_equal(_decoded(sub)["X"], f32["X"][:10])
    bad = _query(client, opened, filters=[{"field": "X", "op": "contains", "value": "1"}])
    assert bad["valid"] is False and "text fields" in bad["error"]
    bad = _query(client, opened, filters=[{"field": "W", "op": ">", "value": "1"}])
    assert bad["valid"] is False and "Unknown field 'W'" in bad["error"]


def test_demo_vbt(client: TestClient) -> None:
    opened = _open(client, "galaxies.bin.head")
    assert opened["valid"] and opened["kind"] == "point" and opened["num_rows"] == 2000
    assert opened["fields"] == ["x", "y", "z", "vx", "vy", "vz", "logmass"]
    res = _query(client, opened, filters=[{"field": "logmass", "op": ">", "value": "11"}], limit=5)
    assert res["valid"] and 0 < res["total_rows"] < 2000 and res["returned_rows"] == 5


def test_truncated_and_oversized_binaries(client: TestClient, data_dir: Path) -> None:
    bin_path = data_dir / "cut.bin"
    write_vbt(bin_path, _columns("point"), scalar_type="double")
    data = bin_path.read_bytes()
    bin_path.write_bytes(data[:-8])
    res = _open(client, bin_path)
    assert res["valid"] is False and "truncated" in res["error"]
    bin_path.write_bytes(data + b"\0" * 8)
    res = _open(client, bin_path)
    assert res["valid"] is False and "larger than its header" in res["error"]


def test_header_errors_worded_like_visivo(client: TestClient, data_dir: Path) -> None:
    (data_dir / "lonely.bin").write_bytes(b"\0" * 16)
    assert _open(client, data_dir / "lonely.bin")["error"] == "VBT header file not found."
    assert _open(client, data_dir / "missing.bin.head")["error"] == "VBT header file not found."
    (data_dir / "e.bin").write_bytes(b"\0" * 16)
    (data_dir / "e.bin.head").write_text("float\n2\n2\nmiddle\na\nb\n")
    assert _open(client, data_dir / "e.bin")["error"] == "Unknown VBT endian"
    (data_dir / "e.bin.head").write_text("float\n2\n2\n")
    assert _open(client, data_dir / "e.bin")["error"] == "VBT header too short"
    (data_dir / "e.bin.head").write_text("float\n2\n2\nlittle\na\n")
    assert _open(client, data_dir / "e.bin")["error"] == "VBT header too short"
    (data_dir / "nobin.bin.head").write_text("float\n1\n2\nlittle\na\n")
    assert _open(client, data_dir / "nobin.bin.head")["error"] == "VBT binary file not found."


def test_header_parser_variants() -> None:
    split = parse_header("double\n1\n24\n2 3 4\n0.5 0.5 1\nbig\nrho\n")
    assert split.grid == (2, 3, 4) and split.spacing == (0.5, 0.5, 1.0) and split.kind == "volume"
    one_line = parse_header("float\n1\n24 2 3 4 1 1 1\nlittle\nrho\n")
    assert one_line.grid == (2, 3, 4) and one_line.endian == "little" and one_line.scalar_type == "float"
    point = parse_header("float\n3\n10\nlittle\nX\nY\nZ\n")
    assert point.kind == "point" and point.fields == ("X", "Y", "Z") and point.num_rows == 10
    with pytest.raises(InvalidRequest, match="does not match"):
        parse_header("float\n1\n25 2 3 4 1 1 1\nlittle\nrho\n")
    with pytest.raises(InvalidRequest, match="scalar type"):
        parse_header("int\n1\n2\nlittle\nrho\n")


def test_volume_as_cube_on_cube_and_product_routes(client: TestClient, data_dir: Path) -> None:
    columns = _columns("volume")
    write_vbt(data_dir / "vol.bin", columns, scalar_type="double", endian="big", grid=GRID, spacing=(0.5, 1.0, 2.0))
    opened = _open(client, data_dir / "vol.bin", as_cube=True, field="temp")
    assert opened["valid"], opened
    nx, ny, nz = GRID
    assert opened["kind"] == "cube" and (opened["width"], opened["height"], opened["depth"]) == (nx, ny, nz)
    assert opened["cdelt"] == [0.5, 1.0, 2.0] and opened["field"] == "temp"
    headers = {"X-Visivo-Session": opened["session_id"]}
    cube = columns["temp"].astype(np.float32)
    ds = opened["dataset_id"]
    sl = client.post("/v1/cube/slice", json={"dataset_id": ds, "axis": "z", "index": 2}, headers=headers).json()
    np.testing.assert_array_equal(decode(sl, shape=(ny, nx)), cube[2])
    sub = client.post("/v1/cube/subvolume", json={"dataset_id": ds, "x0": 1, "x1": 3, "z0": 1, "z1": 2},
                      headers=headers).json()
    np.testing.assert_array_equal(decode(sub, shape=(2, ny, 3)), cube[1:3, :, 1:4])
    mom = client.post("/v1/products/moment", json={"dataset_id": ds, "order": 8}, headers=headers).json()
    assert mom["valid"], mom
    np.testing.assert_allclose(decode(mom, shape=(ny, nx)), cube.max(axis=0), rtol=1e-6)
    res = _query(client, opened, filters=[{"field": "rho", "op": ">", "value": "0"}], limit=1)
    assert res["valid"] and res["total_rows"] == int((columns["rho"].astype(np.float64) > 0).sum())
    point = write_vbt(data_dir / "pt.bin", _columns("point"))
    bad = _open(client, point, as_cube=True)
    assert bad["valid"] is False and "volume" in bad["error"]
