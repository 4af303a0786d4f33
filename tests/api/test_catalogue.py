"""Catalogue routes: open (CSV, VOTable, FITS, IPAC, several files), filters/sort/paging against an
independent pure-Python reference, a generated 2-million-row catalogue, errors and injection attempts."""

from __future__ import annotations

import math
import operator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from astropy.table import Table
from fastapi.testclient import TestClient

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq,
        "!=": operator.ne}
_MORPHS = ["Spiral", "elliptical", "IRREGULAR", "spiral barred", "lenticular"]


def _open(client: TestClient, **body) -> dict:
    res = client.post("/v1/catalogue/open", json=body).json()
    assert res["valid"], res
    return res


def _query(client: TestClient, opened: dict, **body) -> dict:
    headers = {"X-Visivo-Session": opened["session_id"]}
    return client.post("/v1/catalogue/query", json={"dataset_id": opened["dataset_id"], **body},
                       headers=headers).json()


@pytest.fixture
def table_rows() -> list[dict]:
    """3 000 rows with ints, floats (ties, NaN, missing), mixed-case text."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(3000):
        flux = float(np.round(rng.lognormal(2.0, 1.5), 4))
        if i % 97 == 0:
            flux = math.nan
        elif i % 89 == 0:
            flux = None
        rows.append({"id": i, "name": f"SRC{i:05d}", "flux": flux, "mag": float(np.round(rng.uniform(0, 6), 1)),
                     "morph": _MORPHS[int(rng.integers(len(_MORPHS)))]})
    return rows


@pytest.fixture
def sample_csv(data_dir: Path, table_rows: list[dict]) -> Path:
    path = data_dir / "sample.csv"
    lines = ["id,name,flux,mag,morph"]
    for r in table_rows:
        flux = "" if r["flux"] is None else ("nan" if math.isnan(r["flux"]) else repr(r["flux"]))
        lines.append(f"{r['id']},{r['name']},{flux},{r['mag']!r},{r['morph']}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _matches(row: dict, field: str, op: str, value: str) -> bool:
    x = row[field]
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return False
    if op == "contains":
        return value.lower() in x.lower()
    if op == "startswith":
        return x.lower().startswith(value.lower())
    if op == "endswith":
        return x.lower().endswith(value.lower())
    return _OPS[op](x, float(value) if isinstance(x, (int, float)) else value)


def _reference(rows: list[dict], filters: list[dict], sort_field: str | None, direction: str) -> list[int]:
    """Ids in the expected order: AND filters; values sorted stably; NaN, then NULL, last."""
    kept = [r for r in rows if all(_matches(r, f["field"], f["op"], f["value"]) for f in filters)]
    if not sort_field:
        return [r["id"] for r in kept]
    def is_nan(v: object) -> bool:
        return isinstance(v, float) and math.isnan(v)
    values = [r for r in kept if r[sort_field] is not None and not is_nan(r[sort_field])]
    ordered = sorted(values, key=lambda r: r[sort_field], reverse=direction == "desc")
    ordered += [r for r in kept if is_nan(r[sort_field])] + [r for r in kept if r[sort_field] is None]
    return [r["id"] for r in ordered]


CASES = [
    ([], None, "asc"),
    ([{"field": "flux", "op": ">", "value": "10"}], "flux", "desc"),
    ([{"field": "flux", "op": "<=", "value": "50"}, {"field": "morph", "op": "contains", "value": "SPI"}],
     "mag", "asc"),
    ([{"field": "morph", "op": "=", "value": "Spiral"}], "name", "desc"),
    ([{"field": "name", "op": "startswith", "value": "src01"}], None, "asc"),
    ([{"field": "name", "op": "endswith", "value": "7"}, {"field": "mag", "op": "!=", "value": "3.5"}], "mag", "desc"),
    ([{"field": "id", "op": ">=", "value": "1000"}, {"field": "id", "op": "<", "value": "1500"}], "morph", "asc"),
    ([{"field": "name", "op": ">", "value": "SRC02000"}], "flux", "asc"),
    ([{"field": "mag", "op": "=", "value": "2.5"}], None, "asc"),
    ([{"field": "flux", "op": "!=", "value": "1e3"}], "flux", "asc"),
]


@pytest.mark.parametrize(("filters", "sort_field", "direction"), CASES)
def test_filters_sort_paging_match_reference(client: TestClient, sample_csv: Path, table_rows: list[dict],
                                             filters: list[dict], sort_field: str | None, direction: str) -> None:
    opened = _open(client, path=str(sample_csv))
    expected = _reference(table_rows, filters, sort_field, direction)
    got: list[int] = []
    offset = 0
    while True:
        page = _query(client, opened, filters=filters, sort_field=sort_field, sort_direction=direction,
                      limit=700, offset=offset)
        assert page["valid"], page
        assert page["total_rows"] == len(expected)
        assert page["returned_rows"] == len(page["rows"])
        got += [r["id"] for r in page["rows"]]
        offset += page["returned_rows"]
        if offset >= page["total_rows"] or page["returned_rows"] == 0:
            break
    assert got == expected


def test_open_describes_fields_and_rows(client: TestClient, sample_csv: Path, table_rows: list[dict]) -> None:
    opened = _open(client, path=str(sample_csv))
    assert opened["kind"] == "catalogue" and opened["format"] == "csv"
    assert opened["num_rows"] == len(table_rows) and opened["dataset_id"].startswith("ds_")
    assert opened["field_types"] == {"id": "int", "name": "string", "flux": "float", "mag": "float",
                                     "morph": "string"}
    assert opened["coordinate_fields"]["system"] == "none"
    row = _query(client, opened, limit=1, offset=89)["rows"][0]
    assert row == {"id": 89, "name": "SRC00089", "flux": None, "mag": table_rows[89]["mag"], "morph": row["morph"]}
    assert _query(client, opened, limit=1, offset=97)["rows"][0]["flux"] is None  # NaN travels as null


def test_demo_catalogue_is_sky(client: TestClient) -> None:
    opened = _open(client, path="catalogue_sky.csv")
    assert opened["coordinate_fields"] == {"system": "sky", "ra": "ra", "dec": "dec", "fields": ["ra", "dec"]}
    assert opened["redshift_field"] == "redshift" and opened["num_rows"] == 400
    sub = client.post("/v1/catalogue/subset", json={"dataset_id": opened["dataset_id"], "max_rows": 5},
                      headers={"X-Visivo-Session": opened["session_id"]}).json()
    assert sub["valid"] and sub["returned_rows"] == 5 and sub["total_rows"] == 400
    assert sub["rows"][0]["name"] == "SRC0001"


def test_cartesian_and_rowid_column(client: TestClient, data_dir: Path) -> None:
    path = data_dir / "cart.csv"
    path.write_text("rowid,SGX,SGY,SGZ,LogMass\n" + "\n".join(f"{i % 3},{i},{-i},{2 * i},{10 + i % 4}"
                                                               for i in range(50)) + "\n")
    opened = _open(client, path=str(path))
    assert opened["coordinate_fields"]["system"] == "cartesian"
    assert [opened["coordinate_fields"][a] for a in "xyz"] == ["SGX", "SGY", "SGZ"]
    assert opened["field_names"] == ["rowid", "SGX", "SGY", "SGZ", "LogMass"]
    page = _query(client, opened, sort_field="rowid", limit=100)
    assert [r["SGX"] for r in page["rows"]] == sorted(range(50), key=lambda i: (i % 3, i))


def test_two_million_rows_filtered_sorted_page(client: TestClient, data_dir: Path) -> None:
    n = 2_000_000
    rng = np.random.default_rng(11)
    flux = np.round(rng.exponential(10.0, n), 3)
    dec = rng.uniform(-90, 90, n)
    kind = rng.integers(0, 3, n)
    path = data_dir / "big.csv"
    con = duckdb.connect()
    con.register("src", pa.table({"id": np.arange(n), "ra": rng.uniform(0, 360, n), "dec": dec, "flux": flux,
                                  "kind": kind}))
    con.execute(f"COPY src TO '{path}' (HEADER, DELIMITER ',')")
    con.close()
    opened = _open(client, path=str(path))
    assert opened["num_rows"] == n and opened["coordinate_fields"]["system"] == "sky"
    filters = [{"field": "flux", "op": ">", "value": "5"}, {"field": "dec", "op": "<", "value": "30"},
               {"field": "kind", "op": "!=", "value": "1"}]
    page = _query(client, opened, filters=filters, sort_field="flux", sort_direction="desc", limit=1000, offset=0)
    mask = (flux > 5) & (dec < 30) & (kind != 1)
    idx = np.flatnonzero(mask)
    order = idx[np.lexsort((idx, -flux[idx]))]
    assert page["total_rows"] == int(mask.sum())
    assert [r["id"] for r in page["rows"]] == order[:1000].tolist()
    second = _query(client, opened, filters=filters, sort_field="flux", sort_direction="desc", limit=1000,
                    offset=1000)
    assert [r["id"] for r in second["rows"]] == order[1000:2000].tolist()


def test_astropy_formats_and_units(client: TestClient, data_dir: Path) -> None:
    t = Table({"RAJ2000": [10.5, 20.25, 30.0], "DEJ2000": [-5.0, 0.5, 45.0], "Name": ["a", "bb", "ccc"],
               "Flux": [1.5, np.nan, 3.0]})
    t["Flux"].unit = "mJy"
    t["RAJ2000"].unit = "deg"
    for name, fmt in (("t.vot", "votable"), ("t.fits", "fits"), ("t.tbl", "ascii.ipac")):
        t.write(data_dir / name, format=fmt)
        opened = _open(client, path=str(data_dir / name))
        assert opened["num_rows"] == 3, name
        assert opened["coordinate_fields"]["system"] == "sky", name
        fields = {f["name"]: f for f in opened["fields"]}
        assert fields["Flux"]["numeric"] and fields["Flux"]["unit"] == "mJy", name
        assert fields["Name"]["type"] == "string", name
        page = _query(client, opened, filters=[{"field": "Flux", "op": ">=", "value": "1.5"}], sort_field="Flux",
                      sort_direction="desc")
        assert [r["Name"] for r in page["rows"]] == ["ccc", "a"], name


def test_several_files_concatenate_and_mismatch_names_file(client: TestClient, data_dir: Path) -> None:
    (data_dir / "a.csv").write_text("x,y,z\n1,2,3\n4,5,6\n")
    (data_dir / "b.csv").write_text("y,x,z\n20,10.5,30\n")
    (data_dir / "c.csv").write_text("x,y,w\n1,2,3\n")
    opened = _open(client, paths=[str(data_dir / "a.csv"), str(data_dir / "b.csv")])
    assert opened["num_rows"] == 3 and opened["num_files"] == 2
    rows = _query(client, opened)["rows"]
    assert [r["x"] for r in rows] == [1, 4, 10.5]
    bad = client.post("/v1/catalogue/open", json={"paths": [str(data_dir / "a.csv"), str(data_dir / "c.csv")]})
    assert bad.json()["valid"] is False and "c.csv" in bad.json()["error"]
    t = Table({"x": [1.0], "y": [2.0]})
    t.write(data_dir / "p.fits")
    t.write(data_dir / "q.fits")
    Table({"x": [1.0], "q": [2.0]}).write(data_dir / "r.fits")
    assert _open(client, paths=[str(data_dir / "p.fits"), str(data_dir / "q.fits")])["num_rows"] == 2
    bad = client.post("/v1/catalogue/open", json={"paths": [str(data_dir / "p.fits"), str(data_dir / "r.fits")]})
    assert bad.json()["valid"] is False and "r.fits" in bad.json()["error"]


@pytest.mark.parametrize(("flt", "fragment"), [
    ({"field": "nope", "op": ">", "value": "1"}, "Unknown field 'nope'"),
    ({"field": "flux", "op": "like", "value": "1"}, "Unknown filter operator 'like'"),
    ({"field": "flux", "op": ">", "value": "abc"}, "is not a number"),
    ({"field": "flux", "op": "contains", "value": "1"}, "applies to text fields"),
    ({"field": 'flux" > 0 OR "1"="1', "op": ">", "value": "1"}, "Unknown field"),
])
def test_query_errors(client: TestClient, sample_csv: Path, flt: dict, fragment: str) -> None:
    opened = _open(client, path=str(sample_csv))
    res = _query(client, opened, filters=[flt])
    assert res["valid"] is False and fragment in res["error"], res


def test_values_are_bound_not_injected(client: TestClient, sample_csv: Path) -> None:
    opened = _open(client, path=str(sample_csv))
    res = _query(client, opened, filters=[{"field": "name", "op": "=", "value": "x' OR '1'='1"}])
    assert res["valid"] and res["total_rows"] == 0
    res = _query(client, opened, filters=[{"field": "name", "op": "contains", "value": "%"}])
    assert res["valid"] and res["total_rows"] == 0
    bad = _query(client, opened, sort_field="flux", sort_direction="sideways")
    assert bad["valid"] is False and "sort_direction" in bad["error"]


def test_confinement_kind_and_unknown_dataset(client: TestClient, sample_csv: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    res = client.post("/v1/catalogue/open", json={"path": str(outside)}).json()
    assert res == {"valid": False, "error": "File not found."}
    res = client.post("/v1/catalogue/open", json={"path": str(sample_csv), "format": "excel"}).json()
    assert res["valid"] is False and "Unknown catalogue format" in res["error"]
    opened = _open(client, path=str(sample_csv))
    unknown = client.post("/v1/catalogue/query", json={"dataset_id": "ds_000000000000"},
                          headers={"X-Visivo-Session": opened["session_id"]})
    assert unknown.status_code == 404
    fits_ds = client.post("/v1/datasets/open", json={"path": "3c273_continuum.fits.gz"},
                          headers={"X-Visivo-Session": opened["session_id"]}).json()
    wrong = client.post("/v1/catalogue/query", json={"dataset_id": fits_ds["dataset_id"]},
                        headers={"X-Visivo-Session": opened["session_id"]}).json()
    assert wrong["valid"] is False and "not a catalogue" in wrong["error"]
