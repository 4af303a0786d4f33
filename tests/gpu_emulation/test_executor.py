"""The CUDA executor of the emulator: grid semantics, marshalling, sanitizers, refusals, cache."""

from __future__ import annotations

import numpy as np
import pytest

from tests.gpu_emulation import executor

INDEX_KERNEL = r"""
extern "C" __global__ void ids(long long* __restrict__ out, const int n) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int w = gridDim.x * blockDim.x;
    if (x >= w || y * w + x >= n) return;
    out[y * w + x] = 1000000LL * blockIdx.y + 10000LL * blockIdx.x + 100LL * threadIdx.y + threadIdx.x;
}
"""

SHIFT_KERNEL = r"""
extern "C" __global__ void shift(const float* __restrict__ src, float* __restrict__ dst, const long long n,
                                 const int offset, const double scale) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dst[i] = (float)(scale * (double)src[i + offset]);
}
"""


def test_thread_and_block_indices(cp) -> None:
    out = cp.zeros(3 * 4 * 2 * 5, dtype=cp.int64)  # grid (3, 2), block (4, 5)
    cp.RawKernel(INDEX_KERNEL, "ids")((3, 2), (4, 5), (out, np.int32(out.size)))
    by, ty, bx, tx = np.meshgrid(np.arange(2), np.arange(5), np.arange(3), np.arange(4), indexing="ij")
    want = (1000000 * by + 10000 * bx + 100 * ty + tx).reshape(-1)
    np.testing.assert_array_equal(out.get(), want)


def test_scalars_marshalled_like_cupy(cp) -> None:
    src = cp.asarray(np.arange(10, dtype=np.float32))
    dst = cp.zeros(8, dtype=cp.float32)
    # Python int -> int64 (a long long parameter), Python float -> float64 (a double parameter)
    cp.RawKernel(SHIFT_KERNEL, "shift")((1,), (32,), (src, dst, 8, np.int32(2), 0.5))
    np.testing.assert_array_equal(dst.get(), 0.5 * np.arange(2, 10, dtype=np.float32))


def test_writes_through_a_view_reach_the_parent_only_there(cp) -> None:
    parent = cp.full((3, 8), -1.0, dtype=cp.float32)
    src = cp.asarray(np.arange(8, dtype=np.float32))
    cp.RawKernel(SHIFT_KERNEL, "shift")((1,), (8,), (src, parent[1], np.int64(8), np.int32(0), np.float64(2.0)))
    want = np.full((3, 8), -1.0, dtype=np.float32)
    want[1] = 2.0 * np.arange(8)
    np.testing.assert_array_equal(parent.get(), want)


def test_adjacent_views_of_one_array_are_separate_buffers(cp) -> None:
    parent = cp.asarray(np.vstack([np.arange(8, dtype=np.float32), np.zeros(8, dtype=np.float32)]))
    # src = row 0, dst = row 1: they touch in memory; each is its own block (an overrun is caught)
    cp.RawKernel(SHIFT_KERNEL, "shift")((1,), (8,), (parent[0], parent[1], np.int64(8), np.int32(0), np.float64(3.0)))
    np.testing.assert_array_equal(parent.get(), [np.arange(8), 3.0 * np.arange(8)])
    with pytest.raises(executor.KernelFault, match="heap-buffer-overflow"):
        cp.RawKernel(SHIFT_KERNEL, "shift")((1,), (8,), (parent[0], parent[1], np.int64(8), np.int32(1), 1.0))


def test_off_by_one_read_trips_address_sanitizer(cp) -> None:
    src = cp.asarray(np.arange(8, dtype=np.float32))
    dst = cp.zeros(8, dtype=cp.float32)
    with pytest.raises(executor.KernelFault, match="heap-buffer-overflow") as info:
        cp.RawKernel(SHIFT_KERNEL, "shift")((1,), (8,), (src, dst, np.int64(8), np.int32(1), np.float64(1.0)))
    assert "READ of size 4" in str(info.value) and ".cu.cpp" in str(info.value)  # names the source line


def test_read_before_the_start_trips_address_sanitizer(cp) -> None:
    src = cp.asarray(np.arange(8, dtype=np.float32))
    dst = cp.zeros(8, dtype=cp.float32)
    with pytest.raises(executor.KernelFault, match="heap-buffer-overflow"):
        cp.RawKernel(SHIFT_KERNEL, "shift")((1,), (8,), (src, dst, np.int64(8), np.int32(-1), np.float64(1.0)))


def test_write_past_the_end_trips_address_sanitizer(cp) -> None:
    src = cp.asarray(np.arange(9, dtype=np.float32))
    dst = cp.zeros(8, dtype=cp.float32)  # one short: the grid writes dst[8]
    with pytest.raises(executor.KernelFault, match="WRITE of size 4"):
        cp.RawKernel(SHIFT_KERNEL, "shift")((1,), (16,), (src, dst, np.int64(9), np.int32(0), np.float64(1.0)))


def test_undefined_behaviour_trips_ub_sanitizer(cp) -> None:
    source = r"""
    extern "C" __global__ void grow(int* out, const int n) { out[threadIdx.x] = n * 65536; }
    """
    out = cp.zeros(1, dtype=cp.int32)
    with pytest.raises(executor.KernelFault, match="signed integer overflow"):
        cp.RawKernel(source, "grow")((1,), (1,), (out, np.int32(1 << 20)))


RACES = {
    "two threads write one location": "out[0] = (float)threadIdx.x;",
    "a thread reads another's output": "if (threadIdx.x > 0) out[threadIdx.x] = out[threadIdx.x - 1] + 1.0f;",
}


@pytest.mark.parametrize("body", RACES.values(), ids=RACES.keys())
def test_race_between_threads_is_detected(cp, body: str) -> None:
    source = 'extern "C" __global__ void k(float* out) { ' + body + " }"
    with pytest.raises(executor.KernelRace, match="depends on the order of the threads"):
        cp.RawKernel(source, "k")((1,), (8,), (cp.zeros(8, dtype=cp.float32),))


def test_same_value_from_every_thread_is_no_race(cp) -> None:
    source = 'extern "C" __global__ void k(float* out) { out[threadIdx.x] = 1.0f; out[8] = 2.0f; }'
    out = cp.zeros(9, dtype=cp.float32)
    cp.RawKernel(source, "k")((1,), (8,), (out,))
    np.testing.assert_array_equal(out.get(), [1.0] * 8 + [2.0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.int64(8), np.int32(1), np.float64(1.0)), None),  # the well-typed launch, for contrast
        ((np.int32(8), np.int32(1), np.float64(1.0)), "4-byte integer value passed for a 8-byte integer"),
        ((np.int64(8), np.int64(1), np.float64(1.0)), "8-byte integer value passed for a 4-byte integer"),
        ((np.int64(8), np.int32(1), 1), "8-byte integer value passed for a 8-byte floating-point"),
        ((np.int64(8), np.int32(1), np.float32(1.0)), "4-byte floating-point value passed for a 8-byte"),
        ((np.int64(8), np.int32(1)), "takes 5 parameters, the launch passed 4"),
    ],
)
def test_arguments_checked_against_the_kernel_signature(cp, args: tuple, message: str | None) -> None:
    src = cp.asarray(np.arange(9, dtype=np.float32))
    dst = cp.zeros(8, dtype=cp.float32)
    kernel = cp.RawKernel(SHIFT_KERNEL, "shift")
    if message is None:
        kernel((1,), (8,), (src, dst, *args))
        np.testing.assert_array_equal(dst.get(), np.arange(1, 9, dtype=np.float32))
    else:
        with pytest.raises(executor.LaunchError, match=message):
            kernel((1,), (8,), (src, dst, *args))


def test_host_array_argument_is_refused_like_cupy(cp) -> None:
    dst = cp.zeros(8, dtype=cp.float32)
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.RawKernel(SHIFT_KERNEL, "shift")(
            (1,), (8,), (np.arange(9, dtype=np.float32), dst, np.int64(8), np.int32(0), np.float64(1.0))
        )


@pytest.mark.parametrize(
    ("code", "feature"),
    [
        ("__shared__ float tile[32]; tile[threadIdx.x] = out[0];", "__shared__"),
        ("__syncthreads();", "__syncthreads"),
        ("atomicAdd(out, 1.0f);", "atomic operations"),
        ("out[0] = __shfl_down_sync(0xffffffff, out[0], 1);", "warp shuffles"),
        ("if (__any_sync(0xffffffff, out[0] > 0)) out[0] = 1;", "warp vote"),
    ],
)
def test_unsupported_cuda_feature_is_named(cp, code: str, feature: str) -> None:
    source = 'extern "C" __global__ void k(float* out) { ' + code + " }"
    with pytest.raises(executor.UnsupportedCudaFeature, match=feature):
        cp.RawKernel(source, "k")((1,), (1,), (cp.zeros(1, dtype=cp.float32),))


def test_feature_named_only_in_a_comment_is_fine(cp) -> None:
    source = 'extern "C" __global__ void k(float* out) { /* no __syncthreads() needed */ out[0] = 3.0f; }'
    out = cp.zeros(1, dtype=cp.float32)
    cp.RawKernel(source, "k")((1,), (1,), (out,))
    assert out.get()[0] == 3.0


def test_launch_limits_and_module_lookup(cp) -> None:
    kernel = cp.RawKernel(INDEX_KERNEL, "ids")
    out = cp.zeros(4, dtype=cp.int64)
    with pytest.raises(cp.cuda.CUDADriverError, match="block"):
        kernel((1,), (2048,), (out, np.int32(4)))
    with pytest.raises(TypeError, match="tuples"):
        kernel(1, (4,), (out, np.int32(4)))
    with pytest.raises(cp.cuda.CUDADriverError, match="NOT_FOUND"):
        cp.RawModule(code=INDEX_KERNEL).get_function("missing")


def test_compiled_kernels_are_cached_by_source_hash(cp) -> None:
    first = executor.build(INDEX_KERNEL)
    mtime = first.stat().st_mtime_ns
    assert executor.build(INDEX_KERNEL) == first and first.stat().st_mtime_ns == mtime
    assert executor.build(INDEX_KERNEL + "\n// another variant\n") != first
    assert first.parent == executor.cache_dir()


def test_compile_error_reports_the_compiler_message(cp) -> None:
    source = 'extern "C" __global__ void k(float* out) { out[0] = no_such_function(1.0f); }'
    with pytest.raises(executor.CompileError, match="no_such_function"):
        cp.RawKernel(source, "k")((1,), (1,), (cp.zeros(1, dtype=cp.float32),))


def test_intrinsics_follow_cuda(cp) -> None:
    source = r"""
    extern "C" __global__ void k(double* out, const double a, const double b) {
        out[0] = __dmul_rn(a, b);
        out[1] = __dadd_rn(__dmul_rn(a, b), -1.0);   /* two roundings, never an FMA */
        out[2] = (double)__int_as_float(0x7f800000);
        out[3] = (double)min(3, -2) + (double)max(2LL, 7);
        out[4] = fmaxf(__int_as_float(0x7fc00000), 1.5f);  /* NaN-ignoring, as on the device */
        out[5] = isfinite(__longlong_as_double(0x7ff8000000000000LL)) ? 1.0 : 0.0;
    }
    """
    out = cp.zeros(6)
    a, b = 1.0 + 2.0**-30, 1.0 - 2.0**-30
    cp.RawKernel(source, "k")((1,), (1,), (out, np.float64(a), np.float64(b)))
    got = out.get()
    # a*b = 1 - 2**-60 exactly, which rounds to 1.0: rounded product then sum gives 0, a fused
    # multiply-add would give -2**-60
    assert got[0] == 1.0 and got[1] == 0.0
    assert got[2] == np.inf and got[3] == 5.0 and got[4] == 1.5 and got[5] == 0.0
