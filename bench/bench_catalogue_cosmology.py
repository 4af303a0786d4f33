"""Catalogue queries (DuckDB) against read-and-filter peers, and the cosmology batch against astropy.

Run ``python -m bench.bench_catalogue_cosmology [--sizes 2000000,20000000] [--repeat 3]``.

Catalogue: a deterministic CSV (``id, ra, dec, flux, kind, name``; ~50 bytes a row) of each size
is written with DuckDB, then each contender runs in its own subprocess so its peak RSS
(``wait4`` ``ru_maxrss``) is its own:

- **ours**: :meth:`TableStore.from_csv` (the catalogue open: CSV → DuckDB table), then the query
  ``flux > 5 AND dec < 30 AND kind != 1``, sorted by ``flux`` descending, first page of 50 000
  rows as JSON-ready dicts with the filtered ``total_rows`` (:meth:`TableStore.rows`, best of
  ``--repeat``);
- **pyarrow**: ``pyarrow.csv.read_csv`` + ``pyarrow.compute`` filter + ``sort_indices`` + ``take``
  of the first page (a read-and-filter peer available wherever pandas is not);
- **pandas**: ``read_csv`` + boolean filter + ``sort_values`` + ``head`` (skipped when pandas is
  not installed — it is not a dependency of this project).

Every contender reports the ids of its first page and the filtered count; they must agree.

Cosmology: 10⁶ redshifts uniform in [0, 10]: the cached interpolation grid
(:func:`app.services.cosmology.batch`; grid build time reported separately) against
``astropy.cosmology.Planck18.comoving_distance`` directly, with the maximum relative difference,
plus the whole HTTP round trip of ``/v1/cosmology/distance/batch`` (JSON in and out).

Figures go to ``bench/RESULTS.md`` (section ``## Catalogue and cosmology (issue 5)``) and
``bench/results_catalogue_cosmology.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BENCH_DIR,
    MiB,
    best_of,
    command_line,
    fmt_s,
    fmt_x,
    machine_description,
    machine_markdown,
    markdown_table,
    ratio,
    replace_section,
)

SECTION = "Catalogue and cosmology (issue 5)"
PAGE = 50_000
FLUX_MIN, DEC_MAX, KIND_NOT = 5.0, 30.0, 1


# -- data -----------------------------------------------------------------------------------------

def write_catalogue(path: Path, n: int) -> float:
    """A deterministic ``n``-row CSV written by DuckDB; returns the seconds it took."""
    import duckdb  # noqa: PLC0415

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT i AS id, (hash(i) % 36000000) / 100000.0 AS ra, "
        "((hash(i + 7) % 18000000) / 100000.0) - 90.0 AS dec, "
        "round(-10.0 * ln(((hash(i + 13) % 1000000) + 0.5) / 1000000.0), 3) AS flux, "
        "(hash(i + 29) % 3)::INTEGER AS kind, 'SRC' || lpad(i::VARCHAR, 8, '0') AS name "
        f"FROM range({int(n)}) t(i)) TO '{path}' (HEADER, DELIMITER ',')"
    )
    con.close()
    return time.perf_counter() - t0


# -- contenders (each in its own process) ---------------------------------------------------------

def run_ours(csv: Path, repeat: int) -> dict[str, Any]:
    from app.io.catalogue_store import Filter, TableStore  # noqa: PLC0415

    t0 = time.perf_counter()
    store = TableStore.from_csv([csv])
    open_s = time.perf_counter() - t0
    filters = [Filter("flux", ">", str(FLUX_MIN)), Filter("dec", "<", str(DEC_MAX)),
               Filter("kind", "!=", str(KIND_NOT))]
    query_s, (total, _, rows) = best_of(
        lambda: store.rows(filters, sort_field="flux", sort_direction="desc", limit=PAGE), repeat)
    store.close()
    return {"open_s": open_s, "query_s": query_s, "total": total, "first_ids": [r["id"] for r in rows[:20]],
            "returned": len(rows)}


def run_pyarrow(csv: Path, repeat: int) -> dict[str, Any]:
    import pyarrow.compute as pc  # noqa: PLC0415
    from pyarrow import csv as pacsv  # noqa: PLC0415

    t0 = time.perf_counter()
    table = pacsv.read_csv(csv)
    open_s = time.perf_counter() - t0

    def query() -> tuple[int, list]:
        mask = pc.and_(pc.and_(pc.greater(table["flux"], FLUX_MIN), pc.less(table["dec"], DEC_MAX)),
                       pc.not_equal(table["kind"], KIND_NOT))
        kept = table.filter(mask)
        order = pc.sort_indices(kept, sort_keys=[("flux", "descending"), ("id", "ascending")])
        page = kept.take(order[:PAGE]).to_pylist()
        return kept.num_rows, page

    query_s, (total, rows) = best_of(query, repeat)
    return {"open_s": open_s, "query_s": query_s, "total": total, "first_ids": [r["id"] for r in rows[:20]],
            "returned": len(rows)}


def run_pandas(csv: Path, repeat: int) -> dict[str, Any]:
    import pandas as pd  # noqa: PLC0415

    t0 = time.perf_counter()
    frame = pd.read_csv(csv)
    open_s = time.perf_counter() - t0

    def query() -> tuple[int, list]:
        kept = frame[(frame["flux"] > FLUX_MIN) & (frame["dec"] < DEC_MAX) & (frame["kind"] != KIND_NOT)]
        page = kept.sort_values("flux", ascending=False, kind="stable").head(PAGE)
        return len(kept), page.to_dict("records")

    query_s, (total, rows) = best_of(query, repeat)
    return {"open_s": open_s, "query_s": query_s, "total": total, "first_ids": [int(r["id"]) for r in rows[:20]],
            "returned": len(rows)}


_CONTENDERS = {"ours": run_ours, "pyarrow": run_pyarrow, "pandas": run_pandas}


def in_subprocess(name: str, csv: Path, repeat: int) -> dict[str, Any]:
    """Run one contender in a fresh interpreter (it reports its own peak RSS, ``ru_maxrss``)."""
    cmd = [sys.executable, "-m", "bench.bench_catalogue_cosmology", "--worker", name, "--csv", str(csv),
           "--repeat", str(repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH_DIR.parent, check=False)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _worker(name: str, csv: Path, repeat: int) -> None:
    import resource  # noqa: PLC0415

    result = _CONTENDERS[name](csv, repeat)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def pandas_available() -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("pandas") is not None


# -- cosmology ------------------------------------------------------------------------------------

def bench_cosmology(repeat: int) -> dict[str, Any]:
    import warnings  # noqa: PLC0415

    from astropy.cosmology import Planck18  # noqa: PLC0415

    from app.services import cosmology  # noqa: PLC0415

    z = np.random.default_rng(5).uniform(0.0, 10.0, 1_000_000)
    redshifts = z.tolist()
    cosmology._GRIDS.clear()
    t0 = time.perf_counter()
    cosmology.grid_for(Planck18)
    build_s = time.perf_counter() - t0
    ours_s, out = best_of(lambda: cosmology.batch(redshifts, model_name="Planck18"), repeat)
    astropy_s, ref = best_of(lambda: Planck18.comoving_distance(z).value, 1)
    rel = float(np.max(np.abs(out["distances_Mpc"] / ref - 1.0)))

    from fastapi.testclient import TestClient  # noqa: PLC0415

    from app.main import create_app  # noqa: PLC0415
    from app.settings import Settings  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        settings = Settings(token="bench", token_file=Path(tmp) / "token", output_dir=Path(tmp) / "out",
                            backend="cpu", sesame_url="")
        with TestClient(create_app(settings)) as client:
            client.headers.update({"X-Visivo-Token": "bench"})
            body = json.dumps({"redshifts": redshifts, "model": "Planck18"})  # encoded once, outside the timing

            def round_trip() -> dict:
                res = client.post("/v1/cosmology/distance/batch", content=body,
                                  headers={"Content-Type": "application/json"})
                return res.json()

            http_s, res = best_of(round_trip, repeat)
            assert res["valid"] and len(res["distances_Mpc"]) == z.size
    return {"n": z.size, "grid_build_s": build_s, "ours_s": ours_s, "astropy_s": astropy_s, "max_rel_diff": rel,
            "http_round_trip_s": http_s}


# -- report ---------------------------------------------------------------------------------------

def report(catalogue: dict[int, dict[str, Any]], cosmo: dict[str, Any], has_pandas: bool) -> str:
    desc = machine_description()
    rows = []
    for n, results in catalogue.items():
        ours = results["ours"]
        for name in ("ours", "pyarrow", "pandas"):
            r = results.get(name)
            if r is None:
                continue
            if "error" in r:
                rows.append([f"{n:,}", name, "—", "—", "—", "—", r["error"]])
                continue
            total_s = r["open_s"] + r["query_s"]
            rows.append([f"{n:,}", name, fmt_s(r["open_s"]), fmt_s(r["query_s"]), fmt_s(total_s),
                         f"{r['peak_rss_mib']:.0f}",
                         "—" if name == "ours" else fmt_x(ratio(r["query_s"], ours["query_s"]))])
    table = markdown_table(["rows", "contender", "open / read", "query (filter+sort+page)", "read + query",
                            "peak RSS (MiB)", "query time vs ours"], rows)
    sizes = {n: results["csv_mib"] for n, results in catalogue.items()}
    cos = markdown_table(
        ["what", "time", "vs ours"],
        [["ours: interpolation grid, 10⁶ redshifts (grid warm)", fmt_s(cosmo["ours_s"]), "—"],
         ["ours: grid build (once per model)", fmt_s(cosmo["grid_build_s"]), "—"],
         ["astropy `Planck18.comoving_distance` directly", fmt_s(cosmo["astropy_s"]),
          fmt_x(ratio(cosmo["astropy_s"], cosmo["ours_s"]))],
         ["HTTP `/v1/cosmology/distance/batch` (server JSON parse + compute + JSON render, client decode)",
          fmt_s(cosmo["http_round_trip_s"]), "—"]])
    pandas_note = "" if has_pandas else (
        "pandas is not installed in this environment (it is no dependency of the project), so its row is "
        "missing; pyarrow's CSV reader + compute kernels stand in as the read-and-filter peer.\n\n")
    return (
        f"Command: `{command_line()}`\n\n{machine_markdown(desc)}\n\n"
        "### Catalogue query\n\n"
        f"Query: `flux > {FLUX_MIN} AND dec < {DEC_MAX} AND kind != {KIND_NOT}`, sorted by flux descending, "
        f"first page of {PAGE:,} rows (as row dicts) plus the filtered count. \"open / read\" is the catalogue "
        "open (CSV → DuckDB table) for ours and the CSV read for the peers; the query is the best of the repeats "
        "on the loaded table. Each contender ran in its own process; peak RSS is that process's maximum. "
        "All contenders returned the same count and first page. CSV sizes: "
        + ", ".join(f"{n:,} rows = {mib:.0f} MiB" for n, mib in sizes.items()) + ".\n\n"
        + pandas_note + table + "\n\n"
        "### Cosmology batch\n\n"
        f"{cosmo['n']:,} redshifts uniform in [0, 10], Planck18; max relative difference ours vs astropy: "
        f"{cosmo['max_rel_diff']:.1e}.\n\n" + cos + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000000,20000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", choices=sorted(_CONTENDERS))
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.csv, args.repeat)
        return 0
    has_pandas = pandas_available()
    catalogue: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="visivo-bench-cat-") as tmp:
        for n in (int(float(s)) for s in args.sizes.split(",")):
            csv = Path(tmp) / f"cat_{n}.csv"
            write_s = write_catalogue(csv, n)
            results: dict[str, Any] = {"csv_mib": csv.stat().st_size / MiB, "write_s": write_s}
            for name in ("ours", "pyarrow", "pandas"):
                if name == "pandas" and not has_pandas:
                    continue
                results[name] = in_subprocess(name, csv, args.repeat)
                print(n, name, results[name], flush=True)
            valid = [r for k, r in results.items() if isinstance(r, dict) and "total" in r]
            assert len({r["total"] for r in valid}) == 1, "contenders disagree on the filtered count"
            assert len({tuple(r["first_ids"]) for r in valid}) == 1, "contenders disagree on the first page"
            catalogue[n] = results
            csv.unlink()
    cosmo = bench_cosmology(args.repeat)
    print(cosmo, flush=True)
    body = report(catalogue, cosmo, has_pandas)
    (BENCH_DIR / "results_catalogue_cosmology.json").write_text(
        json.dumps({"catalogue": {str(k): v for k, v in catalogue.items()}, "cosmology": cosmo}, indent=2) + "\n")
    if args.no_write:
        print(body)
    else:
        replace_section(SECTION, body)
        print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
