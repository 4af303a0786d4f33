#!/usr/bin/env bash
# GPU run: the gpu-marked parity tests, then the GPU benchmarks.
#
# The tests run with --require-gpu: on this machine they must run on the real device and fail
# (never skip, never fall back to the CPU emulator of tests/gpu_emulation) without one. The
# benchmark reports each moment kernel's achieved bandwidth as a fraction of the device's
# measured bandwidth and of its peak (2 x memory clock x bus width).
#
# For the GPU machine (NumPy, SciPy, CuPy, scikit-image, pytest; no astropy, no network).
# Run from anywhere:   bash bench/gpu_run.sh
# With OUT set, the output of each step is tee'd to $OUT/*.log and the results
# (bench/RESULTS.md with its "## Cube products on GPU (issue 3)" section and
# bench/results_cube_products_gpu.json) are copied to $OUT. Merge the section into the
# repository's RESULTS.md with
#   python -m bench.common import-section $OUT/RESULTS.md bench/RESULTS.md "Cube products on GPU (issue 3)"
# Extra benchmark arguments: BENCH_ARGS="--repeat 5" bash bench/gpu_run.sh
# Exit status: non-zero when the tests or the benchmark failed (both always run).
set -u -o pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python || command -v python3)}
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; fi

step() {  # step NAME CMD... : run CMD, tee its output to $OUT/NAME.log when OUT is set
    local name=$1; shift
    echo "== $name: $*"
    if [ -n "${OUT:-}" ]; then
        "$@" 2>&1 | tee "$OUT/$name.log"
    else
        "$@"
    fi
}

step machine nvidia-smi || true
step gpu_tests "$PY" -m pytest -m gpu --require-gpu tests/gpu -q
tests_rc=$?
# shellcheck disable=SC2086  # BENCH_ARGS is a word list on purpose
step bench_cube_products_gpu "$PY" -m bench.bench_cube_products --gpu --sizes 512,1024 ${BENCH_ARGS:-}
bench_rc=$?

if [ -n "${OUT:-}" ]; then
    cp -f bench/RESULTS.md "$OUT/RESULTS.md" 2>/dev/null || true
    cp -f bench/results_cube_products_gpu.json "$OUT/" 2>/dev/null || true
fi
echo "gpu tests: exit $tests_rc; GPU benchmark: exit $bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
