// CUDA-C-as-C++ shim for the CPU emulator of the gpu_kernels tree (tests only).
//
// Force-included (g++ -include) before each kernel source. It maps the CUDA keywords,
// the built-in index variables and the device intrinsics the kernels use onto C++17,
// with the CUDA semantics:
//   - __dmul_rn/__dadd_rn/... are single IEEE operations rounded to nearest (the
//     emulator compiles with -ffp-contract=off, so no FMA contraction anywhere);
//   - min/max follow CUDA's overloads (integers by value, floating point as fmin/fmax);
//   - blockIdx/threadIdx/blockDim/gridDim are set by the runner for each emulated thread.
// Features the emulator does not implement (shared memory, barriers, atomics, warp
// functions) are rejected by the Python side before compiling, with a message naming them.
#pragma once

#include <math.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

extern uint3 blockIdx, threadIdx;
extern dim3 blockDim, gridDim;

using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

// ---- bit reinterpretation -------------------------------------------------------------
__device__ inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
__device__ inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
__device__ inline float __uint_as_float(unsigned int v) { float f; std::memcpy(&f, &v, 4); return f; }
__device__ inline unsigned int __float_as_uint(float v) { unsigned int i; std::memcpy(&i, &v, 4); return i; }
__device__ inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
__device__ inline long long __double_as_longlong(double v) { long long i; std::memcpy(&i, &v, 8); return i; }

// ---- correctly rounded single operations (round to nearest even) -----------------------
__device__ inline double __dmul_rn(double a, double b) { return a * b; }
__device__ inline double __dadd_rn(double a, double b) { return a + b; }
__device__ inline double __dsub_rn(double a, double b) { return a - b; }
__device__ inline double __ddiv_rn(double a, double b) { return a / b; }
__device__ inline double __dsqrt_rn(double a) { return std::sqrt(a); }
__device__ inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
__device__ inline float __fmul_rn(float a, float b) { return a * b; }
__device__ inline float __fadd_rn(float a, float b) { return a + b; }
__device__ inline float __fsub_rn(float a, float b) { return a - b; }
__device__ inline float __fdiv_rn(float a, float b) { return a / b; }
__device__ inline float __fsqrt_rn(float a) { return std::sqrt(a); }
__device__ inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
__device__ inline double rsqrt(double a) { return 1.0 / std::sqrt(a); }
__device__ inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }

// ---- read-only cache load: a plain load on the CPU ------------------------------------
template <typename T> __device__ inline T __ldg(const T* p) { return *p; }

// ---- CUDA min/max: integer overloads by value, floating point as fmin/fmax -------------
template <typename A, typename B>
__device__ inline typename std::common_type<A, B>::type min(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    if constexpr (std::is_floating_point<C>::value) return std::fmin((C)a, (C)b);
    else return (C)a < (C)b ? (C)a : (C)b;
}
template <typename A, typename B>
__device__ inline typename std::common_type<A, B>::type max(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    if constexpr (std::is_floating_point<C>::value) return std::fmax((C)a, (C)b);
    else return (C)a > (C)b ? (C)a : (C)b;
}

// ---- launch trampoline: cudaLaunchKernel's void** argument convention ---------------------
namespace visivo_emu {

struct ParamInfo { unsigned size; char kind; };  // kind: 'p' pointer, 'i' integer, 'f' floating, 'o' other

template <typename T> constexpr ParamInfo info() {
    return {(unsigned)sizeof(T), std::is_pointer<T>::value ? 'p'
                                 : std::is_floating_point<T>::value ? 'f'
                                 : std::is_integral<T>::value ? 'i' : 'o'};
}

template <typename... Ts, std::size_t... I>
void call_impl(void (*f)(Ts...), void** args, std::index_sequence<I...>) {
    f(*static_cast<typename std::decay<Ts>::type*>(args[I])...);
}

template <typename... Ts> void call(void (*f)(Ts...), void** args) {
    call_impl(f, args, std::index_sequence_for<Ts...>{});
}

template <typename... Ts> const ParamInfo* params(void (*)(Ts...)) {
    static const ParamInfo p[] = {info<typename std::decay<Ts>::type>()..., ParamInfo{0, 0}};
    return p;
}

template <typename... Ts> constexpr int nparams(void (*)(Ts...)) { return (int)sizeof...(Ts); }

struct Kernel {
    const char* name;
    void (*trampoline)(void**);
    int nparams;
    const ParamInfo* params;
};

}  // namespace visivo_emu

#define VISIVO_EMU_KERNEL(NAME) \
    {#NAME, [](void** a) { visivo_emu::call(&NAME, a); }, visivo_emu::nparams(&NAME), visivo_emu::params(&NAME)}
