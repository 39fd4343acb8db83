// Runs the expert kernels of ../experts.cu on the CPU through cuda_emu.h.
//
//   harness batch IN OUT   reads a batch written by kernels/tests/cuda_emulation.rs, runs the three
//                          launches a GPU would run, writes out[n_tokens, hidden] as f32
//   harness selftest       checks the emulation itself (barriers, shared memory, shuffles)
//   harness misuse         a kernel that shuffles with lanes waiting at __syncthreads: must fail
//
// Batch file (little endian): "MOEBATCH", then u32 format (0 f16, 1 q8, 2 q4, 3 q2, 4 fp8, 5 mxfp4), hidden,
// inter, n_tokens, n_experts, n_pairs; i32 pair_offsets[n_experts + 1], pair_rows[n_pairs];
// f32 pair_weights[n_pairs]; i32 token_offsets[n_tokens + 1], token_pairs[n_pairs];
// f32 x[n_tokens * hidden]; then per expert: u64 length and bytes of gate_up, same for down.
#include "cuda_emu.h"

#include "../experts.cu"

#include <fstream>
#include <string>

namespace {

struct Reader {
    std::ifstream in;
    template <typename T>
    T scalar() {
        T v;
        if (!in.read(reinterpret_cast<char*>(&v), sizeof v)) emu::fail("batch file is truncated", 0);
        return v;
    }
    template <typename T>
    std::vector<T> array(size_t n) {
        std::vector<T> v(n);
        if (!in.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(T)))) {
            emu::fail("batch file is truncated", 0);
        }
        return v;
    }
};

int run_batch(const char* in_path, const char* out_path) {
    Reader r{std::ifstream(in_path, std::ios::binary)};
    char magic[8];
    if (!r.in.read(magic, 8) || std::memcmp(magic, "MOEBATCH", 8) != 0) {
        emu::fail("not a batch file", 0);
    }
    const uint32_t format = r.scalar<uint32_t>();
    const int hidden = int(r.scalar<uint32_t>());
    const int inter = int(r.scalar<uint32_t>());
    const int n_tokens = int(r.scalar<uint32_t>());
    const int n_experts = int(r.scalar<uint32_t>());
    const int n_pairs = int(r.scalar<uint32_t>());
    const auto pair_offsets = r.array<int>(n_experts + 1);
    const auto pair_rows = r.array<int>(n_pairs);
    const auto pair_weights = r.array<float>(n_pairs);
    const auto token_offsets = r.array<int>(n_tokens + 1);
    const auto token_pairs = r.array<int>(n_pairs);
    const auto x = r.array<float>(size_t(n_tokens) * hidden);
    // Weights live in 256-byte aligned buffers, as cudaMalloc returns them.
    std::vector<std::vector<u64>> storage;
    std::vector<u64> gate_up_ptrs, down_ptrs;
    for (int e = 0; e < n_experts; ++e) {
        for (std::vector<u64>* ptrs : {&gate_up_ptrs, &down_ptrs}) {
            const u64 len = r.scalar<u64>();
            storage.emplace_back((len + 263) / 8);
            char* p = reinterpret_cast<char*>(storage.back().data());
            p += (256 - reinterpret_cast<uintptr_t>(p) % 256) % 256;
            if (!r.in.read(p, std::streamsize(len))) emu::fail("batch file is truncated", 0);
            ptrs->push_back(reinterpret_cast<u64>(p));
        }
    }
    std::vector<float> h(size_t(n_pairs) * inter), y(size_t(n_pairs) * hidden);
    std::vector<float> out(size_t(n_tokens) * hidden);
    const dim3 gate_up_grid((inter + WARPS - 1) / WARPS, n_experts);
    const dim3 down_grid((hidden + WARPS - 1) / WARPS, n_experts);
    const int* po = pair_offsets.data();
    const u64* gu = gate_up_ptrs.data();
    const u64* dn = down_ptrs.data();
    switch (format) {
#define MOE_LAUNCH(code, name)                                                             \
    case code:                                                                             \
        emu::launch(gate_up_grid, MOE_THREADS, [&] {                                       \
            moe_gate_up_##name(gu, po, pair_rows.data(), x.data(), h.data(), hidden, inter); \
        });                                                                                \
        emu::launch(down_grid, MOE_THREADS, [&] {                                          \
            moe_down_##name(dn, po, pair_weights.data(), h.data(), y.data(), hidden, inter); \
        });                                                                                \
        break;
        MOE_LAUNCH(0, f16)
        MOE_LAUNCH(1, q8)
        MOE_LAUNCH(2, q4)
        MOE_LAUNCH(3, q2)
        MOE_LAUNCH(4, fp8)
        MOE_LAUNCH(5, mxfp4)
#undef MOE_LAUNCH
        default:
            emu::fail("unknown format code", format);
    }
    emu::launch(n_tokens, 128, [&] {
        moe_combine(token_offsets.data(), token_pairs.data(), y.data(), out.data(), hidden);
    });
    std::ofstream o(out_path, std::ios::binary);
    o.write(reinterpret_cast<const char*>(out.data()), std::streamsize(out.size() * sizeof(float)));
    return o ? 0 : 1;
}

// A block-wide sum: each warp reduces with shuffles, warp sums meet in shared memory, warp 0
// reduces those; every thread also reads a neighbour's shared slot after a barrier.
__global__ void block_sum(const float* in, float* sums, float* neighbours) {
    __shared__ float warp_sums[32];
    __shared__ float slots[1024];
    const unsigned t = threadIdx.x;
    const float v = in[blockIdx.x * blockDim.x + t];
    slots[t] = v;
    float s = v;
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(FULL_MASK, s, offset);
    if (t % 32 == 0) warp_sums[t / 32] = s;
    __syncthreads();
    neighbours[blockIdx.x * blockDim.x + t] = slots[(t + 1) % blockDim.x];
    if (t < 32) {
        float w = t < blockDim.x / 32 ? warp_sums[t] : 0.0f;
        w = warp_sum(w);
        if (t == 0) sums[blockIdx.x] = w;
    }
}

int selftest() {
    const unsigned blocks = 3, threads = 256;
    std::vector<float> in(blocks * threads), sums(blocks), neighbours(blocks * threads);
    for (size_t i = 0; i < in.size(); ++i) in[i] = float(i % 7) - 2.0f;
    emu::launch(blocks, threads, [&] { block_sum(in.data(), sums.data(), neighbours.data()); });
    for (unsigned b = 0; b < blocks; ++b) {
        float want = 0.0f;
        for (unsigned t = 0; t < threads; ++t) want += in[b * threads + t];
        if (sums[b] != want) {
            std::fprintf(stderr, "block %u: sum %g, want %g\n", b, sums[b], want);
            return 1;
        }
        for (unsigned t = 0; t < threads; ++t) {
            if (neighbours[b * threads + t] != in[b * threads + (t + 1) % threads]) {
                std::fprintf(stderr, "block %u thread %u: wrong neighbour\n", b, t);
                return 1;
            }
        }
    }
    std::printf("selftest ok: %u blocks x %u threads\n", blocks, threads);
    return 0;
}

__global__ void shuffle_across_barrier() {
    if (threadIdx.x % 32 < 16) {
        __syncthreads();
    } else {
        __shfl_xor_sync(FULL_MASK, 1.0f, 1);
    }
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "batch" && argc == 4) return run_batch(argv[2], argv[3]);
    if (mode == "selftest") return selftest();
    if (mode == "misuse") {
        emu::launch(1, 64, [] { shuffle_across_barrier(); });
        return 0;
    }
    std::fprintf(stderr, "usage: harness batch IN OUT | selftest | misuse\n");
    return 64;
}
