"""The distributed lane: moment maps locally vs on a LocalCluster of 1 and 2 worker processes (issue 15).

A deterministic 512×512×256 float32 cube (256 MiB, :func:`bench.common.synthetic_cube`) is written
to a temporary FITS file; the moment map is computed by the server's job code
(:func:`app.services.moments.compute_moment`) three ways: in this process (the local path), and
with the job's tiles sent to a ``dask.distributed`` LocalCluster of 1, then 2 worker processes
(one thread each), the workers reading their y-slabs from the file by path. Every distributed map
is checked bit-identical to the local one. Timings are the best of ``--repeat`` runs, the file in
the page cache (one warm-up run first).

Run: ``python -m bench.bench_dask`` (figures go to the ``## Dask lane (issue 15)`` section of
``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.common import (
    best_of,
    command_line,
    fmt_s,
    fmt_x,
    machine_description,
    machine_markdown,
    markdown_table,
    ratio,
    replace_section,
    synthetic_cube,
    synthetic_header_cards,
    write_fits_cube,
)

SECTION = "Dask lane (issue 15)"
MEMORY_SECTION = "Dask lane: a cube larger than a worker's memory (issue 15)"


def _burn(_: int) -> int:
    """Pure-Python CPU work (no I/O, no NumPy): the machine's own 1→2 worker ceiling."""
    total = 0
    for k in range(3_000_000):
        total += k
    return total


def _calibrate(workers: int, lane_client: object) -> None:
    lane_client.gather(lane_client.map(_burn, range(workers), pure=False))  # warm-up


def _peak_rss_mib() -> float:
    """This process's peak resident set (MiB), read on a worker by ``client.run``."""
    import resource  # noqa: PLC0415

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_case(args: argparse.Namespace) -> None:
    """Moment 0 of a cube ``--memory-factor`` times one worker's ``memory_limit``, on 2 such workers."""
    from distributed import LocalCluster  # noqa: PLC0415

    from app.compute.backend import select_backend  # noqa: PLC0415
    from app.compute.dask_lane import DaskLane  # noqa: PLC0415
    from app.compute.dispatch import JobContext  # noqa: PLC0415
    from app.io.fits_reader import open_fits_image  # noqa: PLC0415
    from app.operations.defs.moment import Moment  # noqa: PLC0415
    from app.services.moments import MomentParams, compute_moment  # noqa: PLC0415
    from app.services.sessions import Dataset  # noqa: PLC0415

    limit_mib = args.worker_memory_mb
    nz, ny = 128, 1024
    nx = int(args.memory_factor * limit_mib * 2**20 / (4 * nz * ny))
    shape = (nz, ny, nx)
    desc = machine_description()
    # the workers start before the cube exists: ru_maxrss survives fork/exec, so they must not inherit a big parent
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=f"{limit_mib}MiB",
                      dashboard_address="127.0.0.1:0", scheduler_port=0) as cluster, \
            tempfile.TemporaryDirectory() as tmp:
        lane = DaskLane(cluster.scheduler_address)
        try:
            before = lane.client.run(_peak_rss_mib)
            path = Path(tmp) / "big.fits"
            write_fits_cube(path, synthetic_cube(shape), synthetic_header_cards(shape))
            image = open_fits_image(path)
            dataset = Dataset("ds_big", "s", path, "cube", image, {})
            params = MomentParams(0, "reference", 0, nz - 1, None, None, None, None)
            ctx = JobContext(select_backend("cpu"), None, args.chunk_mb << 20, capability=Moment.capability)
            ctx.cluster = lane
            seconds, out = best_of(lambda: compute_moment(ctx, dataset, params), 1)
            after = lane.client.run(_peak_rss_mib)
            pids_before = len(before)
            alive = len(lane.client.scheduler_info(n_workers=-1)["workers"])
        finally:
            lane.close()
        local_ctx = JobContext(select_backend("cpu"), None, args.chunk_mb << 20, capability=Moment.capability)
        local = compute_moment(local_ctx, dataset, params)
        image.close()
    identical = out.tobytes() == local.tobytes()
    cube_mib = 4 * np.prod(shape) / 2**20
    rows = [[addr.rsplit(":", 1)[-1], f"{before[addr]:.0f}", f"{after[addr]:.0f}"] for addr in sorted(after)]
    body = "\n".join([
        f"Command: `{command_line()}`", "", machine_markdown(desc), "",
        f"Cube {nx}×{ny}×{nz} float32 = {cube_mib:.0f} MiB, {cube_mib / limit_mib:.1f}× one worker's "
        f"`memory_limit` of {limit_mib} MiB; 2 worker processes; chunk budget {args.chunk_mb} MiB. Moment 0 "
        f"took {fmt_s(seconds)}; workers alive at the end: {alive} of {pids_before} (none restarted); map "
        f"bit-identical to the local path: {identical}. Peak RSS (`ru_maxrss`) of each worker process before "
        "the job (imports) and after it:", "",
        markdown_table(["worker port", "peak RSS before (MiB)", "peak RSS after (MiB)"], rows), "",
        "Workers read their slabs from the memmap and drop the file pages after each piece "
        "(`madvise(MADV_DONTNEED)`, see *Limits*), so a worker holds one slab, not the file.",
    ])
    replace_section(MEMORY_SECTION, body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256,512,512", help="nz,ny,nx of the cube")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--chunk-mb", type=int, default=64, help="chunk budget (VISIVO_CHUNK_MEGABYTES)")
    parser.add_argument("--memory-case", action="store_true",
                        help="instead: a cube larger than a worker's memory_limit, peak worker RSS")
    parser.add_argument("--worker-memory-mb", type=int, default=256)
    parser.add_argument("--memory-factor", type=float, default=3.0)
    args = parser.parse_args()
    if args.memory_case:
        memory_case(args)
        return
    from distributed import LocalCluster  # noqa: PLC0415

    from app.compute.backend import select_backend  # noqa: PLC0415
    from app.compute.dask_lane import DaskLane  # noqa: PLC0415
    from app.compute.dispatch import JobContext  # noqa: PLC0415
    from app.io.fits_reader import open_fits_image  # noqa: PLC0415
    from app.operations.defs.moment import Moment  # noqa: PLC0415
    from app.services.moments import MomentParams, compute_moment  # noqa: PLC0415
    from app.services.sessions import Dataset  # noqa: PLC0415

    shape = tuple(int(n) for n in args.shape.split(","))
    desc = machine_description()
    backend = select_backend("cpu")
    cases = [("reference", 0), ("reference", 2), ("casa", 3)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cube.fits"
        write_fits_cube(path, synthetic_cube(shape), synthetic_header_cards(shape))
        image = open_fits_image(path)
        dataset = Dataset("ds_bench", "s", path, "cube", image, {})

        def run(params: MomentParams, lane: DaskLane | None) -> np.ndarray:
            ctx = JobContext(backend, None, args.chunk_mb << 20, capability=Moment.capability)
            ctx.cluster = lane
            return compute_moment(ctx, dataset, params)

        timings: dict[tuple[str, int], dict[str, float]] = {c: {} for c in cases}
        burn: dict[int, float] = {}
        reference: dict[tuple[str, int], np.ndarray] = {}
        for convention, order in cases:
            params = MomentParams(order, convention, 0, shape[0] - 1, None, None, None, None)
            run(params, None)
            timings[(convention, order)]["local"], reference[(convention, order)] = best_of(
                lambda params=params: run(params, None), args.repeat)
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address="127.0.0.1:0", scheduler_port=0) as cluster:
                lane = DaskLane(cluster.scheduler_address)
                try:
                    for convention, order in cases:
                        params = MomentParams(order, convention, 0, shape[0] - 1, None, None, None, None)
                        run(params, lane)
                        seconds, out = best_of(lambda params=params, lane=lane: run(params, lane), args.repeat)
                        assert out.tobytes() == reference[(convention, order)].tobytes(), (convention, order)
                        timings[(convention, order)][f"dask{workers}"] = seconds
                    _calibrate(workers, lane.client)
                    burn[workers], _ = best_of(
                        lambda lane=lane: lane.client.gather(lane.client.map(_burn, range(8), pure=False)),
                        args.repeat)
                finally:
                    lane.close()
        image.close()
    slab_rows = max(1, int((args.chunk_mb << 20) // (shape[0] * shape[2] * 16)))
    tiles = -(-shape[1] // slab_rows)
    for (convention, order), t in timings.items():
        rows.append([f"{convention} {order}", fmt_s(t["local"]), fmt_s(t["dask1"]), fmt_s(t["dask2"]),
                     fmt_x(ratio(t["dask1"], t["dask2"])), fmt_x(ratio(t["dask1"], t["local"])),
                     fmt_s(t["dask1"] - t["local"]) if t["dask1"] > t["local"] else "below noise"])
    body = "\n".join([
        f"Command: `{command_line()}`", "", machine_markdown(desc), "",
        f"Cube {shape[2]}×{shape[1]}×{shape[0]} float32 ({4 * np.prod(shape) / 2**20:.0f} MiB) on local disk, "
        f"page-cached; chunk budget {args.chunk_mb} MiB → {tiles} y-slab tiles of {slab_rows} rows. Best of "
        f"{args.repeat} after a warm-up. *local*: the job in the server process; *dask N*: LocalCluster of N "
        "worker processes × 1 thread, the workers reading their tiles from the file. Every distributed map was "
        "bit-identical to the local one.", "",
        markdown_table(["moment", "local", "dask 1 worker", "dask 2 workers", "speed-up 1→2 workers",
                        "dask 1 worker / local", "dask 1 worker − local"], rows),
        "", f"Calibration, the machine's own ceiling: 8 pure-Python CPU tasks (no I/O) took {fmt_s(burn[1])} on 1 "
        f"worker and {fmt_s(burn[2])} on 2 ({fmt_x(ratio(burn[1], burn[2]))}); a second worker can only help "
        "the moments as much as it helps this.",
        "", "The machine has 2 cores shared with other jobs (see the load average): the 2-worker figure is "
        "bounded by the cores actually free; figures move by ±50 % between runs under this load (earlier runs "
        "the same evening, with the calibration at 1.0×, showed no 1→2 speed-up at all). The overhead of the "
        "lane (dask 1 worker − local, over the tiles) is the task round trip plus each tile's file open (header "
        "parse) and the unpickling of its kernel call; it is amortised by heavier kernels (the CASA median) "
        "and by bigger tiles (`VISIVO_CHUNK_MEGABYTES`).",
    ])
    replace_section(SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
