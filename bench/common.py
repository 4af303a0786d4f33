"""Shared helpers for the benchmarks in ``bench/``.

Only NumPy at module level: the GPU machine has NumPy, SciPy, CuPy, scikit-image and
pytest, no astropy. FITS writing imports astropy lazily.

- :func:`machine_description` — CPU model, cores, RAM, Python/NumPy versions, date (and GPU).
- :func:`best_of` — best wall-clock time of ``repeat`` calls.
- :func:`synthetic_cube` / :func:`synthetic_axis` / :func:`write_fits_cube` — deterministic
  float32 test cubes (Gaussian lines + noise + NaN) with a RA/Dec/VRAD WCS.
- :func:`replace_section` — rewrite one ``## heading`` section of ``bench/RESULTS.md`` and
  leave the other benchmarks' sections alone.

``python -m bench.common import-section SRC DST HEADING`` copies one section of a results
file written elsewhere (e.g. on the GPU machine) into another.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"
RESULTS_TITLE = (
    "# Benchmark results\n\n"
    "One `## <benchmark>` section per script in `bench/`; each script rewrites only its own section.\n"
)

MiB = 1 << 20
GiB = 1 << 30


# -- machine -------------------------------------------------------------------------------------

def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def total_ram_bytes() -> int:
    """Physical memory in bytes (``/proc/meminfo`` MemTotal), 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def peak_bandwidth(props: dict[str, Any]) -> float | None:
    """The device's theoretical memory bandwidth in bytes/s from CUDA device properties.

    ``2 × memoryClockRate × memoryBusWidth / 8`` (double data rate; ``memoryClockRate`` in kHz,
    ``memoryBusWidth`` in bits), the formula of NVIDIA's ``bandwidthTest``/``deviceQuery``;
    e.g. an H100 SXM (2 619 000 kHz, 5120 bits) gives 3.35 TB/s. None when the runtime does not
    report them (CUDA 13 drops ``memoryClockRate``).
    """
    clock_khz, bus_bits = props.get("memoryClockRate") or 0, props.get("memoryBusWidth") or 0
    if clock_khz <= 0 or bus_bits <= 0:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8.0


def gpu_description() -> dict[str, Any]:
    """Name, memory and CUDA runtime of device 0 (empty when CuPy or a device is missing)."""
    try:
        import cupy  # noqa: PLC0415

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return {
            "gpu": name,
            "gpu_memory_gib": round(props["totalGlobalMem"] / GiB, 1),
            "gpu_peak_bandwidth_gb_s": round((peak_bandwidth(props) or 0.0) / 1e9) or None,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cupy": cupy.__version__,
        }
    except Exception:
        return {}


def machine_description(*, gpu: bool = False) -> dict[str, Any]:
    """What the figures were measured on."""
    desc: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "ram_gib": round(total_ram_bytes() / GiB, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with contextlib.suppress(OSError):
        desc["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if gpu:
        desc.update(gpu_description())
    return desc


def machine_markdown(desc: dict[str, Any]) -> str:
    """One Markdown bullet line per machine property."""
    labels = {"cpu": "CPU", "cores": "cores", "ram_gib": "RAM (GiB)", "python": "Python", "numpy": "NumPy",
              "platform": "platform", "date": "date",
              "load_average": "load average (1/5/15 min) at start", "gpu": "GPU", "gpu_memory_gib": "GPU memory (GiB)",
              "gpu_peak_bandwidth_gb_s": "GPU peak memory bandwidth (GB/s, from clock × bus width)",
              "cuda_runtime": "CUDA runtime", "cupy": "CuPy"}
    return "\n".join(f"- {labels.get(k, k)}: {v}" for k, v in desc.items())


def command_line() -> str:
    """The command that is running, as typed (``python -m module args``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
    return " ".join([head, *sys.argv[1:]])


# -- timing --------------------------------------------------------------------------------------

def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall-clock seconds over ``repeat`` calls of ``fn()`` and the last call's result."""
    best = float("inf")
    result = None
    for _ in range(max(1, int(repeat))):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def fmt_s(seconds: float | None) -> str:
    """Seconds with three significant figures (ms below 1 s); ``—`` when not measured."""
    if seconds is None or not np.isfinite(seconds):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_x(ratio: float | None) -> str:
    """A ratio as ``12.3×`` (``—`` when missing)."""
    if ratio is None or not np.isfinite(ratio):
        return "—"
    return f"{ratio:.3g}×"


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` or ``None`` when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# -- synthetic cubes -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticAxis:
    """Linear VRAD axis of a synthetic cube (FITS convention: 1-based reference pixel)."""

    crval_m_s: float = 1.2e6
    cdelt_m_s: float = 5.0e3
    crpix: float = 1.0

    def coords_km_s(self, nz: int) -> np.ndarray:
        """(nz,) float64 channel centres in km/s."""
        return (self.crval_m_s + (np.arange(nz, dtype=np.float64) + 1.0 - self.crpix) * self.cdelt_m_s) / 1000.0

    def widths_km_s(self, nz: int) -> np.ndarray:
        """(nz,) float64 channel widths in km/s (uniform)."""
        return np.full(nz, abs(self.cdelt_m_s) / 1000.0)


SYNTHETIC_AXIS = SyntheticAxis()
_SLAB_ROWS = 16  # generation granularity; fixed so the cube does not depend on memory settings


def synthetic_cube(shape: tuple[int, int, int], *, seed: int = 20240611, nan_fraction: float = 0.01,
                   axis: SyntheticAxis = SYNTHETIC_AXIS) -> np.ndarray:
    """A deterministic float32 ``(nz, ny, nx)`` cube of Gaussian lines plus noise, with NaN blanks.

    Model: a rotating-disc-like galaxy. Peak ``A(y, x) = exp(-r²/2R²)`` (R = a quarter of the
    field), centre velocity ``v0 = v_sys + 150 km/s · tanh(x'/R')`` along the major axis, width
    ``σ = 15 + 25·A`` km/s, Gaussian noise of 0.05, every voxel blank (NaN) with probability
    ``nan_fraction``, and the first 4 columns fully blank (as a primary-beam mask leaves them).
    Generated in fixed slabs of 16 rows with per-slab seeds, in float32 throughout.
    """
    nz, ny, nx = shape
    v = axis.coords_km_s(nz).astype(np.float32)[:, None, None]
    v_sys = np.float32(v.mean())
    cube = np.empty(shape, dtype=np.float32)
    xs = (np.arange(nx, dtype=np.float32) - nx / 2) / (nx / 4)
    for i, y0 in enumerate(range(0, ny, _SLAB_ROWS)):
        y1 = min(ny, y0 + _SLAB_ROWS)
        rng = np.random.default_rng([seed, i])
        ys = ((np.arange(y0, y1, dtype=np.float32) - ny / 2) / (ny / 4))[:, None]
        amp = np.exp(-0.5 * (xs[None, :] ** 2 + ys**2)).astype(np.float32)
        v0 = v_sys + np.float32(150.0) * np.tanh((xs[None, :] * 0.8 + ys * 0.6) / np.float32(0.7))
        sigma = np.float32(15.0) + np.float32(25.0) * amp
        block = (v - v0[None]) / sigma[None]
        np.square(block, out=block)
        block *= np.float32(-0.5)
        np.exp(block, out=block)
        block *= amp[None]
        block += np.float32(0.05) * rng.standard_normal(block.shape, dtype=np.float32)
        block[rng.random(block.shape, dtype=np.float32) < nan_fraction] = np.nan
        cube[:, y0:y1, :] = block
    cube[:, :, :4] = np.nan
    return cube


def synthetic_header_cards(shape: tuple[int, int, int], axis: SyntheticAxis = SYNTHETIC_AXIS) -> list[tuple]:
    """FITS header cards (RA---SIN / DEC--SIN / VRAD in m/s, Jy/beam, a beam) for a synthetic cube."""
    nz, ny, nx = shape
    return [
        ("CTYPE1", "RA---SIN"), ("CUNIT1", "deg"), ("CRVAL1", 180.0), ("CRPIX1", nx / 2 + 1.0),
        ("CDELT1", -1.0 / 3600.0),
        ("CTYPE2", "DEC--SIN"), ("CUNIT2", "deg"), ("CRVAL2", 30.0), ("CRPIX2", ny / 2 + 1.0),
        ("CDELT2", 1.0 / 3600.0),
        ("CTYPE3", "VRAD"), ("CUNIT3", "m/s"), ("CRVAL3", axis.crval_m_s), ("CRPIX3", axis.crpix),
        ("CDELT3", axis.cdelt_m_s),
        ("SPECSYS", "LSRK"), ("RESTFRQ", 1.420405752e9), ("RADESYS", "ICRS"), ("EQUINOX", 2000.0),
        ("BUNIT", "Jy/beam"), ("BMAJ", 3.0 / 3600.0), ("BMIN", 3.0 / 3600.0), ("BPA", 0.0),
        ("OBJECT", "SYNTHETIC"), ("TELESCOP", "BENCH"),
    ]


def write_fits_cube(path: Path, cube: np.ndarray, cards: list[tuple]) -> None:
    """Write a float32 ``(nz, ny, nx)`` cube as a big-endian BITPIX=-32 FITS file, one plane at a time."""
    from astropy.io import fits  # noqa: PLC0415  (not on the GPU machine)

    nz, ny, nx = cube.shape
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 3
    header["NAXIS1"], header["NAXIS2"], header["NAXIS3"] = nx, ny, nz
    for key, value in cards:
        header[key] = value
    with open(path, "wb") as handle:
        handle.write(header.tostring().encode("ascii"))
        for z in range(nz):
            handle.write(cube[z].astype(">f4").tobytes())
        pad = (-cube.nbytes) % 2880
        handle.write(b"\0" * pad)


# -- RESULTS.md ----------------------------------------------------------------------------------

def _split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(heading line, body)]) of a Markdown file split at ``## `` headings."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    in_fence = False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("## "):
            sections.append((line.rstrip("\n"), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "".join(preamble), [(h, "".join(b)) for h, b in sections]


def replace_section(heading: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace (or append) the section ``## heading`` of ``path``, leaving every other section as is."""
    title = f"## {heading}"
    text = path.read_text() if path.exists() else RESULTS_TITLE
    preamble, sections = _split_sections(text)
    new_body = "\n" + body.strip("\n") + "\n\n"
    for i, (h, _) in enumerate(sections):
        if h.strip() == title:
            sections[i] = (title, new_body)
            break
    else:
        sections.append((title, new_body))
    out = preamble.rstrip("\n") + "\n\n" + "".join(f"{h}\n{b.rstrip()}\n\n" for h, b in sections)
    path.write_text(out.rstrip("\n") + "\n")


def read_section(heading: str, path: Path) -> str | None:
    """The body of ``## heading`` in ``path`` (``None`` when absent)."""
    _, sections = _split_sections(path.read_text())
    for h, b in sections:
        if h.strip() == f"## {heading}":
            return b
    return None


def _main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "import-section":
        src, dst, heading = Path(argv[1]), Path(argv[2]), argv[3]
        body = read_section(heading, src)
        if body is None:
            print(f"no section '## {heading}' in {src}", file=sys.stderr)
            return 1
        replace_section(heading, body, dst)
        return 0
    print("usage: python -m bench.common import-section SRC DST HEADING", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
