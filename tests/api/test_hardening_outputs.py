"""Output files: concurrent saves never share a name, the registered dataset is its file, ``.part`` files are
removed on failure and swept at start-up (after a kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from app.io import fits_writer
from app.io.fits_writer import CubeWriter, sweep_partial_files, unique_output_path, write_fits_atomic
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import TOKEN, decode, open_dataset, write_cube

REPO = Path(__file__).resolve().parents[2]


def test_concurrent_saves_get_distinct_names(tmp_path: Path) -> None:
    """Eight writers pick their name at the same moment (all see the same free name), then write."""
    count = 8
    barrier = threading.Barrier(count)
    written: dict[int, Path] = {}

    def save(i: int) -> None:
        path = unique_output_path(tmp_path, "cube_mom0")
        barrier.wait()  # every thread has chosen before any has written: the old race
        written[i] = write_fits_atomic(path, np.full((3, 4), i, np.float32), fits.Header(), exclusive=True)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(written.values())) == count
    assert {p.name for p in written.values()} == {"cube_mom0.fits"} | {f"cube_mom0_{k}.fits" for k in range(1, count)}
    for i, path in written.items():  # each answer's path holds that writer's data
        np.testing.assert_array_equal(fits.getdata(path), np.full((3, 4), i, np.float32))
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_cube_writer_never_overwrites_a_name_taken_meanwhile(tmp_path: Path) -> None:
    path = unique_output_path(tmp_path, "stack")
    path.write_bytes(b"another job's file")  # committed by a concurrent job after our name was chosen
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    with CubeWriter(path, fits.Header(), data.shape, exclusive=True) as writer:
        writer.write(slice(0, 3), data)
        final = writer.commit()
    assert final == tmp_path / "stack_1.fits" and writer.path == final
    assert path.read_bytes() == b"another job's file"
    np.testing.assert_array_equal(fits.getdata(final), data)


def test_failed_writes_remove_their_part_files(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), CubeWriter(tmp_path / "x.fits", fits.Header(), (2, 3, 4)):
        raise RuntimeError("job failed midway")
    with CubeWriter(tmp_path / "y.fits", fits.Header(), (2, 3, 4)):
        pass  # left without commit
    with pytest.raises(ValueError):
        write_fits_atomic(tmp_path / "z.fits", np.zeros((2, 2), np.float32), "not a header")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_moment_saves_differing_in_threshold_keep_their_own_files(client: TestClient, data_dir: Path) -> None:
    data = np.random.default_rng(3).normal(1.0, 1.0, (6, 5, 4)).astype(np.float32)
    body = open_dataset(client, write_cube(data_dir / "m.fits", data))
    headers = {"X-Visivo-Session": body["session_id"]}
    answers = [client.post("/v1/products/moment", headers=headers,
                           json={"dataset_id": body["dataset_id"], "order": 8, "threshold": t, "save": True}).json()
               for t in (0.5, 1.5)]
    paths = [Path(a["output_path"]) for a in answers]
    assert paths[0] != paths[1] and paths[0].stem in paths[1].stem  # same base name, distinct files
    for answer, path in zip(answers, paths, strict=True):
        on_disk = fits.getdata(path)
        np.testing.assert_array_equal(on_disk, decode(answer).reshape(5, 4).astype(">f4"))
    masked = np.where(data >= 1.5, data, np.nan)
    expected = np.full((5, 4), np.nan, np.float32)
    some = np.isfinite(masked).any(axis=0)
    expected[some] = np.nanmax(masked[:, some], axis=0)
    np.testing.assert_allclose(fits.getdata(paths[1]), expected, rtol=1e-6)


def test_registered_baseline_is_its_file(client: TestClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent job takes the proposed name before our commit: ours moves aside and is registered as such."""
    from app.services import baseline

    squatters: list[Path] = []

    def taken(directory: Path, stem: str, suffix: str = ".fits") -> Path:
        path = unique_output_path(directory, stem, suffix)
        path.write_bytes(b"SIMPLE  = T  / a concurrent job's result")
        squatters.append(path)
        return path

    monkeypatch.setattr(baseline, "unique_output_path", taken)
    z = np.arange(12, dtype=np.float32)[:, None, None]
    cube = (2.0 + 0.5 * z + np.zeros((12, 3, 4), np.float32)).astype(np.float32)
    cube[5:7] += 4.0
    body = open_dataset(client, write_cube(data_dir / "b.fits", cube))
    sid, ds = body["session_id"], body["dataset_id"]
    res = client.post(f"/v1/spectral/baseline/{sid}/{ds}", json={
        "poly_order": 1, "line_free_channels": [[0, 3], [8, 11]]}).json()
    assert res["valid"], res
    out = Path(res["output_path"])
    assert out != squatters[0] and squatters[0].read_bytes().startswith(b"SIMPLE  = T  / a concurrent")
    expected = np.zeros_like(cube)
    expected[5:7] = 4.0  # the line stays, the linear baseline is gone
    np.testing.assert_allclose(fits.getdata(out), expected, atol=1e-5)
    registered = client.get(f"/v1/datasets/{res['new_dataset_id']}", headers={"X-Visivo-Session": sid}).json()
    assert registered["path"] == str(out)
    plane = client.post("/v1/cube/slice", json={"dataset_id": res["new_dataset_id"], "index": 5},
                        headers={"X-Visivo-Session": sid}).json()
    np.testing.assert_allclose(decode(plane).reshape(3, 4), fits.getdata(out)[5], atol=0)


def test_part_file_of_a_killed_writer_is_swept_at_start(settings: Settings) -> None:
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from astropy.io import fits
        from app.io.fits_writer import CubeWriter
        writer = CubeWriter(Path({str(out / 'big_baseline.fits')!r}), fits.Header(), (8, 64, 64))
        writer.write(slice(0, 32), 1.0)
        print("writing", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    orphans = list(out.glob(".big_baseline.fits.*.part"))
    assert len(orphans) == 1 and orphans[0].stat().st_size > 8 * 64 * 64 * 4
    (out / "keep.fits").write_bytes(b"x")
    live = out / f".mine.fits.abc.{os.getpid()}.part"  # a live writer's file (this process) is kept
    live.write_bytes(b"x")
    with TestClient(create_app(settings), headers={"X-Visivo-Token": TOKEN}) as client:
        assert client.get("/v1/health").status_code == 200
    assert not orphans[0].exists() and live.exists() and (out / "keep.fits").exists()


def test_sweep_rules(tmp_path: Path) -> None:
    sub = tmp_path / "samp_uploads"
    sub.mkdir()
    dead = [tmp_path / ".a.fits.x1y2.4194304999.part", tmp_path / ".b.fits.qwerty.part", sub / ".c.fits.part"]
    kept = [tmp_path / "visible.part", tmp_path / ".hidden.fits", tmp_path / f".d.fits.zz.{os.getpid()}.part"]
    for path in dead + kept:
        path.write_bytes(b"1")
    assert sweep_partial_files(tmp_path) == 3
    assert [p.exists() for p in dead] == [False] * 3 and all(p.exists() for p in kept)
    assert fits_writer.sweep_partial_files(tmp_path / "missing") == 0
