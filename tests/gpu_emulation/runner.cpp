// Launch runner of the CPU emulator of CUDA kernels (tests only).
//
// Linked with one compiled kernel source (which defines visivo_emu_table), built with
// -fsanitize=address,undefined. Reads one launch from stdin, copies every device buffer
// into its own exactly-sized heap block (so AddressSanitizer's red zones sit right at the
// buffer's ends), runs every thread of the grid one after the other -- twice, forwards and
// backwards, and fails if the results differ (a race between threads) -- and writes the
// buffers back to stdout. Argument marshalling is CUDA's: one pointer per parameter to
// a value of the parameter's size; mismatches against the kernel's C++ signature are
// reported (exit status 3) instead of being reinterpreted silently.
//
// stdin:  "VEMU1" | u32 len, name | u32 grid[3] | u32 block[3] | u32 nbuf, {u64 size, bytes}
//         | u32 nargs, {u8 'p', u32 buf (0xffffffff: null), u64 offset | u8 'i'/'f'/'b', u32 size, bytes}
// stdout: the buffers' bytes, in order.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_shim.h"

uint3 blockIdx, threadIdx;
dim3 blockDim, gridDim;

extern const visivo_emu::Kernel visivo_emu_table[];
extern const int visivo_emu_count;

static void fail(const std::string& msg) {
    std::fprintf(stderr, "VISIVO_EMU_ERROR: %s\n", msg.c_str());
    std::exit(3);
}

static void read_exact(void* dst, size_t n) {
    if (n && std::fread(dst, 1, n, stdin) != n) fail("truncated launch description");
}

template <typename T> static T read_val() { T v; read_exact(&v, sizeof v); return v; }

static const char* kind_name(char k) {
    return k == 'p' ? "pointer" : k == 'i' ? "integer" : k == 'f' ? "floating-point" : k == 'b' ? "bool" : "struct";
}

int main() {
    char magic[5];
    read_exact(magic, 5);
    if (std::memcmp(magic, "VEMU1", 5) != 0) fail("bad magic");
    std::string name(read_val<uint32_t>(), '\0');
    read_exact(&name[0], name.size());
    uint32_t g[3], b[3];
    read_exact(g, sizeof g);
    read_exact(b, sizeof b);
    const visivo_emu::Kernel* k = nullptr;
    for (int i = 0; i < visivo_emu_count; ++i)
        if (name == visivo_emu_table[i].name) k = &visivo_emu_table[i];
    if (!k) fail("no __global__ function named " + name + " in the module");

    uint32_t nbuf = read_val<uint32_t>();
    std::vector<unsigned char*> bufs(nbuf);
    std::vector<uint64_t> sizes(nbuf);
    for (uint32_t i = 0; i < nbuf; ++i) {
        sizes[i] = read_val<uint64_t>();
        bufs[i] = static_cast<unsigned char*>(std::malloc(sizes[i]));  // exact size: red zones at both ends
        read_exact(bufs[i], sizes[i]);
    }
    uint32_t nargs = read_val<uint32_t>();
    if ((int)nargs != k->nparams)
        fail(name + " takes " + std::to_string(k->nparams) + " parameters, the launch passed " + std::to_string(nargs));
    struct alignas(16) Slot { unsigned char bytes[16]; };
    std::vector<Slot> slots(nargs);
    std::vector<void*> argv(nargs);
    for (uint32_t i = 0; i < nargs; ++i) {
        const visivo_emu::ParamInfo& p = k->params[i];
        char kind = read_val<char>();
        std::string where = name + " argument " + std::to_string(i) + ": ";
        if (kind == 'p') {
            uint32_t buf = read_val<uint32_t>();
            uint64_t off = read_val<uint64_t>();
            if (p.kind != 'p') fail(where + "a device array passed for a " + std::to_string(p.size) + "-byte " + kind_name(p.kind) + " parameter");
            void* ptr = buf == 0xffffffffu ? nullptr : bufs.at(buf) + off;
            std::memcpy(slots[i].bytes, &ptr, sizeof ptr);
        } else {
            uint32_t size = read_val<uint32_t>();
            if (size > 16) fail(where + "value too large");
            read_exact(slots[i].bytes, size);
            bool ok = p.kind != 'p' && size == p.size &&
                      (p.kind == 'o' || (kind == 'f') == (p.kind == 'f'));
            if (!ok)
                fail(where + "a " + std::to_string(size) + "-byte " + kind_name(kind) + " value passed for a " +
                     std::to_string(p.size) + "-byte " + kind_name(p.kind) + " parameter");
        }
        argv[i] = slots[i].bytes;
    }

    gridDim = {g[0], g[1], g[2]};
    blockDim = {b[0], b[1], b[2]};
    const uint64_t nblock = (uint64_t)g[0] * g[1] * g[2], nthread = (uint64_t)b[0] * b[1] * b[2];
    const uint64_t total = nblock * nthread;
    auto run = [&](uint64_t t) {  // linear thread id -> block and thread indices (x fastest)
        uint64_t blk = t / nthread, thr = t % nthread;
        blockIdx = {(unsigned)(blk % g[0]), (unsigned)(blk / g[0] % g[1]), (unsigned)(blk / ((uint64_t)g[0] * g[1]))};
        threadIdx = {(unsigned)(thr % b[0]), (unsigned)(thr / b[0] % b[1]), (unsigned)(thr / ((uint64_t)b[0] * b[1]))};
        k->trampoline(argv.data());
    };
    // Order check: run the grid forwards, keep the result, restore the inputs, run it backwards.
    // Threads of a CUDA launch are unordered, so any byte that differs is a race between threads
    // (two writes to one place, or a thread reading what another writes).
    std::vector<std::vector<unsigned char>> before(nbuf), forward(nbuf);
    for (uint32_t i = 0; i < nbuf; ++i) before[i].assign(bufs[i], bufs[i] + sizes[i]);
    for (uint64_t t = 0; t < total; ++t) run(t);
    for (uint32_t i = 0; i < nbuf; ++i) {
        forward[i].assign(bufs[i], bufs[i] + sizes[i]);
        if (sizes[i]) std::memcpy(bufs[i], before[i].data(), sizes[i]);
    }
    for (uint64_t t = total; t-- > 0;) run(t);
    for (uint32_t i = 0; i < nbuf; ++i)
        for (uint64_t j = 0; j < sizes[i]; ++j)
            if (bufs[i][j] != forward[i][j])
                fail("RACE: the result depends on the order of the threads (buffer " + std::to_string(i) +
                     ", byte " + std::to_string(j) + "): threads write one location or read another thread's output");

    for (uint32_t i = 0; i < nbuf; ++i) {
        if (sizes[i] && std::fwrite(bufs[i], 1, sizes[i], stdout) != sizes[i]) fail("short write");
        std::free(bufs[i]);
    }
    std::fflush(stdout);
    return 0;
}
