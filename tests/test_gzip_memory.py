"""Issue 12 item 2: a ``.fits.gz`` is never inflated in RAM.

The big case is a 1024×1024×512 cube of zeros (BITPIX 8: 512 MiB inflated, ~0.5 MB compressed),
built streaming without ever holding it. The server runs in a fresh interpreter that reports its
peak RSS from ``/proc/self/status`` (``VmHWM`` reset through ``clear_refs``) around three opens and
JS9 ``imstat`` calls; before this fix each open cost the whole inflated size.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from app.errors import InvalidRequest
from app.io import gzip_cache
from app.io.fits_reader import open_fits_image
from app.services.js9.images import resident_bytes

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (512, 1024, 1024)  # (z, y, x)


def write_zero_cube_gz(path: Path, shape: tuple[int, int, int], *, bitpix: int = 8, garbage_data: bool = False) -> int:
    """Stream a gzip FITS cube of zeros to ``path`` (deflate blocks of zeros repeated after full flushes).

    Returns the inflated size in bytes. With ``garbage_data`` the deflate stream after the header is
    random bytes after the first 4 MiB of zeros, so any attempt to inflate the data fails.
    """
    header = fits.Header()
    header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, bitpix, 3
    for k, n in enumerate(shape[::-1], start=1):
        header[f"NAXIS{k}"] = n
    for k, ctype in enumerate(("RA---SIN", "DEC--SIN", "VRAD"), start=1):
        header[f"CTYPE{k}"], header[f"CRPIX{k}"], header[f"CDELT{k}"] = ctype, 1.0, 1e-3 if k < 3 else 1e3
        header[f"CRVAL{k}"], header[f"CUNIT{k}"] = 10.0 if k < 3 else 0.0, "deg" if k < 3 else "m/s"
    head = header.tostring().encode("ascii")
    data = abs(bitpix) // 8 * math.prod(shape)
    padded = math.ceil(data / 2880) * 2880
    chunk = 1 << 22
    zeros = bytes(chunk)
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    crc = zlib.crc32(head)
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        out.write(comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH))
        block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)  # identical for every chunk
        if garbage_data:  # 4 MiB of zeros, then bytes that are not deflate data
            out.write(block + np.random.default_rng(0).integers(0, 256, 1 << 16, dtype=np.uint8).tobytes())
            return len(head) + padded
        full, rest = divmod(padded, chunk)
        for _ in range(full):
            out.write(block)
            crc = zlib.crc32(zeros, crc)
        out.write(comp.compress(bytes(rest)) + comp.flush(zlib.Z_FINISH))
        crc = zlib.crc32(bytes(rest), crc)
        out.write(struct.pack("<II", crc & 0xFFFFFFFF, (len(head) + padded) & 0xFFFFFFFF))
    return len(head) + padded


def test_generator_writes_a_valid_gzip_fits(tmp_path: Path) -> None:
    path = tmp_path / "small.fits.gz"
    size = write_zero_cube_gz(path, (3, 40, 50), bitpix=-32)
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    assert len(raw) == size and size == 2880 + math.ceil(3 * 40 * 50 * 4 / 2880) * 2880
    with fits.open(path) as hdul:
        assert hdul[0].data.shape == (3, 40, 50) and not hdul[0].data.any()


def _small_gz(path: Path, value: float, shape=(4, 30, 20)) -> np.ndarray:
    data = np.full(shape, value, dtype=np.float32)
    data[1, 2, 3] = value + 1
    plain = path.with_suffix("")
    fits.PrimaryHDU(data).writeto(plain, overwrite=True)
    with plain.open("rb") as src, gzip.open(path, "wb") as dst:
        dst.write(src.read())
    plain.unlink()
    return data


def test_inflated_copy_is_memmapped_reused_and_lru_bounded(tmp_path: Path) -> None:
    files = [tmp_path / f"c{i}.fits.gz" for i in range(3)]
    arrays = [_small_gz(p, float(i)) for i, p in enumerate(files)]
    one = gzip_cache.inflated_size(files[0])
    assert one == 2880 + math.ceil(4 * 30 * 20 * 4 / 2880) * 2880
    cache = gzip_cache.GzipCache(tmp_path / "cache", max_bytes=2 * one, max_inflated_bytes=10 * one)
    old = gzip_cache._current
    gzip_cache._current = cache
    try:
        images = []
        for path, array in zip(files, arrays, strict=True):
            image = open_fits_image(path)
            assert image.compressed and resident_bytes(image) == 0  # memory-mapped, not in RAM
            np.testing.assert_array_equal(image.source.read(), array)
            images.append(image)
        names = sorted(p.name for p in cache.directory.iterdir())
        assert len(names) == 2 and cache.cached_bytes() == 2 * one  # the least recently used went
        np.testing.assert_array_equal(images[0].source.read(), arrays[0])  # still mapped after eviction
        again = open_fits_image(files[2])  # a hit: no new file
        assert sorted(p.name for p in cache.directory.iterdir()) == names
        np.testing.assert_array_equal(again.source.read(), arrays[2])
        for image in [*images, again]:
            image.close()
    finally:
        gzip_cache._current = old


def test_refused_from_the_header_before_inflating(tmp_path: Path) -> None:
    """The data part of this stream is garbage: a refusal that names the size proves it was never inflated."""
    path = tmp_path / "huge.fits.gz"
    size = write_zero_cube_gz(path, SHAPE, garbage_data=True)
    cache = gzip_cache.GzipCache(tmp_path / "cache", max_bytes=4096 << 20, max_inflated_bytes=256 << 20)
    with pytest.raises(InvalidRequest) as err, cache.lease(path):
        pass
    assert err.value.message == (
        f"huge.fits.gz inflates to {size / 2**20:.1f} MiB, over the limit of 256.0 MiB for compressed FITS "
        "(VISIVO_MAX_INFLATED_MEGABYTES); decompress it on disk and open the .fits file.")
    small_cache = gzip_cache.GzipCache(tmp_path / "cache", max_bytes=128 << 20, max_inflated_bytes=1024 << 20)
    with pytest.raises(InvalidRequest, match=r"more than the whole gzip cache of 128.0 MiB"), small_cache.lease(path):
        pass
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from fastapi.testclient import TestClient
    from app.main import create_app
    from app.settings import Settings

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    def start():
        open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
        return status("VmRSS")

    tmp, name = Path(sys.argv[1]), sys.argv[2]
    settings = Settings(token="t" * 24, token_file=tmp / "token", output_dir=tmp / "out", data_roots=str(tmp),
                        backend="cpu", workers=2, heavy_slots=1, memory_budget_mb=256, gzip_cache_megabytes=1024,
                        max_inflated_megabytes=1024)
    out = {}
    with TestClient(create_app(settings)) as client:
        client.headers["X-Visivo-Token"] = "t" * 24
        from cpu_fallback.compiled import runtime
        warm = runtime.start_warm_up()  # the compiled kernels' start-up load is not the opens' memory
        if warm is not None:
            warm.join(600)
        base = start()
        opens = [client.post("/v1/datasets/open", json={"path": name}).json() for _ in range(3)]
        out["open_peak_growth"] = status("VmHWM") - base
        out["opens"] = [{k: o.get(k) for k in ("valid", "error", "width", "height", "depth", "compressed")}
                        for o in opens]
        out["cache_files"] = [p.stat().st_size for p in (tmp / "out" / ".gzip_cache").iterdir()]
        base = start()
        whole = client.post("/api/visualization/js9/analysis", json={"task": "imstat", "image_path": name})
        box = client.post("/api/visualization/js9/analysis", json={
            "task": "imstat", "image_path": name,
            "region": {"shape": "box", "x": 500.5, "y": 300.5, "width": 64, "height": 64}})
        out["imstat_peak_growth"] = status("VmHWM") - base
        out["whole"] = [whole.status_code, whole.json()]
        out["box"] = [box.status_code, box.json()]
    print(json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_three_opens_and_imstat_stay_far_below_the_inflated_size(tmp_path: Path) -> None:
    inflated = write_zero_cube_gz(tmp_path / "zeros.fits.gz", SHAPE)
    assert (tmp_path / "zeros.fits.gz").stat().st_size < 4 << 20 and inflated > 512 << 20
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISIVO_")}, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path), "zeros.fits.gz"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert [o["valid"] for o in out["opens"]] == [True] * 3, out["opens"]
    assert out["opens"][0]["width"] == 1024 and out["opens"][0]["depth"] == 512 and out["opens"][0]["compressed"]
    assert out["cache_files"] == [inflated]  # inflated once, to disk
    assert out["open_peak_growth"] < inflated / 8, out["open_peak_growth"]
    status, body = out["whole"]
    assert status == 400 and "over the per-request memory budget of 256.0 MiB" in body["detail"]
    assert body["detail"].startswith(f"imstat over {math.prod(SHAPE)} pixels needs about ")
    status, body = out["box"]
    assert status == 200 and body["success"], body
    stats = body["result"]["DATA"]
    assert stats["npts"] == 64 * 64 * 512 and stats["sum"] == 0.0 and stats["max"] == 0.0 and stats["median"] == 0.0
    assert out["imstat_peak_growth"] < inflated / 4, out["imstat_peak_growth"]


def test_js9_image_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    """Tile-compressed images are decompressed into RAM by astropy: they weigh their array; memmaps weigh 0."""
    from app.services.js9.images import ImageCache, open_view

    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        data = rng.normal(size=(256, 256)).astype(np.float32)  # 256 KiB in RAM once decompressed
        path = tmp_path / f"tiled{i}.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(path)
        paths.append(path)
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(rng.normal(size=(512, 512)).astype(np.float32)).writeto(plain)
    cache = ImageCache(capacity=8, max_bytes=600 << 10)
    views = [open_view(p, cache=cache) for p in paths]
    assert [resident_bytes(v.image) for v in views] == [256 << 10] * 3
    assert len(cache) == 2 and cache.held_bytes() == 512 << 10  # the least recently used went
    assert [v.owned for v in views] == [False] * 3
    big = open_view(plain, cache=cache)
    assert resident_bytes(big.image) == 0 and len(cache) == 3  # memory-mapped: weighs nothing
    tiny = ImageCache(capacity=8, max_bytes=100 << 10)
    alone = open_view(paths[0], cache=tiny)
    assert len(tiny) == 0 and alone.owned  # heavier than the whole cache: not kept, closed with its view
    alone.close()
    for view in [*views, big]:
        view.image.close()
