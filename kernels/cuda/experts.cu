// Expert kernels: one MoE layer's batch on one GPU, for weights in f16, fp8, q8, q4, mxfp4 or q2.
//
// A batch is a list of (token row, expert, gate weight) pairs grouped by expert. The host side
// (kernels/src/batch.rs) builds the index arrays:
//   pair_offsets[e] .. pair_offsets[e + 1]   the pairs of the batch's expert e
//   pair_rows[p], pair_weights[p]            the token row and gate weight of pair p
//   token_offsets[t] .. token_offsets[t + 1] positions in token_pairs of token t's pairs
//   token_pairs[i]                           a pair index, in the order the host adds them up
// and two device arrays of matrix addresses, indexed by the batch's expert number (the
// indirection that lets one launch cover every expert of the batch):
//   gate_up[e]: [2 * inter, hidden], gate rows first, then up rows
//   down[e]:    [hidden, inter]
// Matrices are row-major in the block layouts of kernels/src/quant (byte for byte; the block
// sizes are asserted below), rows back to back.
//
// Launches, in order, on one stream:
//   moe_gate_up_<fmt>  grid (inter / WARPS rounded up, n_experts), MOE_THREADS threads
//                      h[p, r] = silu(gate_r . x[pair_rows[p]]) * (up_r . x[pair_rows[p]])
//   moe_down_<fmt>     grid (hidden / WARPS rounded up, n_experts), MOE_THREADS threads
//                      y[p, r] = pair_weights[p] * (down_r . h[p])
//   moe_combine        grid n_tokens, any block size
//                      out[t, c] = sum of y[p, c] over t's pairs, in token_pairs order
// Experts of different formats in one batch are launched per format into the same h and y.
//
// Work split: one warp computes one output row (both the gate and the up row for moe_gate_up)
// for up to MAX_PAIRS pairs at once; each lane reads 4 consecutive weights per step, so a warp
// covers 128 columns per step and a quantized block is read by 8 lanes. The inputs of the pairs
// are staged in shared memory, TILE columns at a time, and shared by the block's warps.
// Accumulation is in f32, in a fixed order, so results are reproducible run to run.

#define WARPS 8
#define MOE_THREADS (WARPS * 32)
#define MAX_PAIRS 8
#define TILE 512
// At least 2 resident blocks per SM: ptxas may use up to 128 registers a thread (the 16
// accumulators of moe_gate_up spill under the 64 it picks otherwise).
#define MIN_BLOCKS 2
#define FULL_MASK 0xffffffffu

typedef unsigned long long u64;

#ifndef MOE_EMULATION
__device__ __forceinline__ float f16_to_f32(unsigned short bits) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
    return f;
}
#endif

__device__ __forceinline__ unsigned short load_u16(const unsigned char* p) {
    return *reinterpret_cast<const unsigned short*>(p);
}

// Each format reads the 4 weights at columns c .. c + 4 of one row (c a multiple of 4).
struct F16 {
    static constexpr int BLOCK_ELEMS = 1;
    static constexpr int BLOCK_BYTES = 2;
    __device__ static void load4(const unsigned char* row, int c, float w[4]) {
        const unsigned short* p = reinterpret_cast<const unsigned short*>(row) + c;
        for (int i = 0; i < 4; ++i) w[i] = f16_to_f32(p[i]);
    }
};

// An E4M3 code's value: its bits placed where an f16 keeps them (sign to bit 15, exponent and
// mantissa to bits 13..7) make an f16 of 2^-8 times the value, subnormals included.
__device__ __forceinline__ float e4m3_to_f32(unsigned char code) {
    const unsigned short h = (unsigned short)(((code & 0x7f) << 7) | ((code & 0x80) << 8));
    return f16_to_f32(h) * 256.0f;
}

// BlockFp8: f32 d, then 32 E4M3 codes; element j = d * e4m3(qs[j]).
struct Fp8 {
    static constexpr int BLOCK_ELEMS = 32;
    static constexpr int BLOCK_BYTES = 36;
    __device__ static void load4(const unsigned char* row, int c, float w[4]) {
        const unsigned char* b = row + (c / 32) * BLOCK_BYTES;
        const float d = *reinterpret_cast<const float*>(b);
        const unsigned char* qs = b + 4 + c % 32;
        for (int i = 0; i < 4; ++i) w[i] = d * e4m3_to_f32(qs[i]);
    }
};

// BlockQ8: f16 d, then 32 int8 codes; element j = d * qs[j].
struct Q8 {
    static constexpr int BLOCK_ELEMS = 32;
    static constexpr int BLOCK_BYTES = 34;
    __device__ static void load4(const unsigned char* row, int c, float w[4]) {
        const unsigned char* b = row + (c / 32) * BLOCK_BYTES;
        const float d = f16_to_f32(load_u16(b));
        const signed char* qs = reinterpret_cast<const signed char*>(b + 2) + c % 32;
        for (int i = 0; i < 4; ++i) w[i] = d * float(qs[i]);
    }
};

// BlockQ4: f16 d, then 16 bytes; byte j holds element j (low nibble) and j + 16 (high nibble);
// element = d * (code - 8).
struct Q4 {
    static constexpr int BLOCK_ELEMS = 32;
    static constexpr int BLOCK_BYTES = 18;
    __device__ static void load4(const unsigned char* row, int c, float w[4]) {
        const unsigned char* b = row + (c / 32) * BLOCK_BYTES;
        const float d = f16_to_f32(load_u16(b));
        const int j = c % 32;
        const unsigned char* qs = b + 2 + (j % 16);
        const int shift = j < 16 ? 0 : 4;
        for (int i = 0; i < 4; ++i) w[i] = d * float(int((qs[i] >> shift) & 15) - 8);
    }
};

// An E2M1 code's value: its magnitude bits placed in an f16's two lowest exponent bits and top
// mantissa bit (sign to bit 15) make an f16 of 2^-14 times the value, 0.5 as a subnormal.
__device__ __forceinline__ float e2m1_to_f32(unsigned int code) {
    const unsigned short h = (unsigned short)(((code & 7) << 9) | ((code & 8) << 12));
    return f16_to_f32(h) * 16384.0f;
}

// An E8M0 scale 2^(e - 127) (e < 255; the host refuses 255) built from its bits; e = 0 is the
// f32 subnormal 2^-127.
__device__ __forceinline__ float e8m0_to_f32(unsigned int e) {
    return __uint_as_float(e == 0 ? 0x00400000u : e << 23);
}

// BlockMxfp4: E8M0 e, then 16 bytes; byte j holds the E2M1 codes of element j (low nibble) and
// j + 16 (high nibble); element = 2^(e - 127) * e2m1(code).
struct Mxfp4 {
    static constexpr int BLOCK_ELEMS = 32;
    static constexpr int BLOCK_BYTES = 17;
    __device__ static void load4(const unsigned char* row, int c, float w[4]) {
        const unsigned char* b = row + (c / 32) * BLOCK_BYTES;
        const float d = e8m0_to_f32(b[0]);
        const int j = c % 32;
        const unsigned char* qs = b + 1 + (j % 16);
        const int shift = j < 16 ? 0 : 4;
        for (int i = 0; i < 4; ++i) w[i] = d * e2m1_to_f32((qs[i] >> shift) & 15);
    }
};

// BlockQ2: f16 d, f16 m, then 8 bytes; element j is in byte j % 8 at bits 2 * (j / 8);
// element = d * code + m.
struct Q2 {
    static constexpr int BLOCK_ELEMS = 32;
    static constexpr int BLOCK_BYTES = 12;
    __device__ static void load4(const unsigned char* row, int c, float w[4]) {
        const unsigned char* b = row + (c / 32) * BLOCK_BYTES;
        const float d = f16_to_f32(load_u16(b));
        const float m = f16_to_f32(load_u16(b + 2));
        const int j = c % 32;
        const unsigned char* qs = b + 4 + (j % 8);
        const int shift = 2 * (j / 8);
        for (int i = 0; i < 4; ++i) w[i] = d * float((qs[i] >> shift) & 3) + m;
    }
};

static_assert(Fp8::BLOCK_BYTES == 4 + 32, "BlockFp8 is 36 bytes");
static_assert(Q8::BLOCK_BYTES == 2 + 32, "BlockQ8 is 34 bytes");
static_assert(Q4::BLOCK_BYTES == 2 + 16, "BlockQ4 is 18 bytes");
static_assert(Mxfp4::BLOCK_BYTES == 1 + 16, "BlockMxfp4 is 17 bytes");
static_assert(Q2::BLOCK_BYTES == 2 + 2 + 8, "BlockQ2 is 12 bytes");
static_assert(TILE % 128 == 0, "a tile is a whole number of warp steps");
static_assert(MOE_THREADS % 32 == 0, "whole warps");

template <typename Fmt>
__device__ __forceinline__ u64 row_bytes(int cols) {
    return u64(cols / Fmt::BLOCK_ELEMS) * Fmt::BLOCK_BYTES;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

__device__ __forceinline__ float silu(float g) { return g / (1.0f + __expf(-g)); }

// Copies columns t0 .. t0 + width of the np input rows (row i of the pairs is src[rows[i]], or
// src[first + i] when rows is null) into xs, then waits for the whole block.
__device__ __forceinline__ void stage(float4 (*xs)[TILE / 4], const float* __restrict__ src,
                                      const int* __restrict__ rows, int first, int np, int cols,
                                      int t0, int width) {
    const int quads = width / 4;
    for (int i = threadIdx.x; i < np * quads; i += MOE_THREADS) {
        const int p = i / quads;
        const int q = i % quads;
        const u64 row = rows ? u64(rows[first + p]) : u64(first + p);
        const float* s = src + row * cols + t0 + 4 * q;
        xs[p][q] = make_float4(s[0], s[1], s[2], s[3]);
    }
    __syncthreads();
}

// acc[p] += w . xs[p][c .. c + 4]
__device__ __forceinline__ void fma4(float acc[MAX_PAIRS], const float w[4],
                                     float4 (*xs)[TILE / 4], int np, int c) {
#pragma unroll
    for (int p = 0; p < MAX_PAIRS; ++p) {
        if (p < np) {
            const float4 x = xs[p][c / 4];
            acc[p] += w[0] * x.x + w[1] * x.y + w[2] * x.z + w[3] * x.w;
        }
    }
}

// One warp's dot products: weight rows w[0..ROWS) against the np input rows of pairs
// p0 .. p0 + np (row i is src[rows[p0 + i]], or src[p0 + i] when rows is null), summed over the
// warp; every lane gets the sums. Every thread of the block calls it (it stages and waits);
// `active` is false for warps past the last output row.
template <typename Fmt, int ROWS>
__device__ __forceinline__ void warp_dots(float4 (*xs)[TILE / 4],
                                          const unsigned char* const (&w)[ROWS], bool active,
                                          const float* __restrict__ src,
                                          const int* __restrict__ rows, int p0, int np, int cols,
                                          float acc[ROWS][MAX_PAIRS]) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int k = 0; k < ROWS; ++k) {
#pragma unroll
        for (int p = 0; p < MAX_PAIRS; ++p) acc[k][p] = 0.0f;
    }
    for (int t0 = 0; t0 < cols; t0 += TILE) {
        const int width = min(TILE, cols - t0);
        stage(xs, src, rows, p0, np, cols, t0, width);
        if (active) {
            for (int c = 4 * lane; c < width; c += 128) {
#pragma unroll
                for (int k = 0; k < ROWS; ++k) {
                    float v[4];
                    Fmt::load4(w[k], t0 + c, v);
                    fma4(acc[k], v, xs, np, c);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int k = 0; k < ROWS; ++k) {
#pragma unroll
        for (int p = 0; p < MAX_PAIRS; ++p) acc[k][p] = warp_sum(acc[k][p]);
    }
}

template <typename Fmt>
__device__ void gate_up(const u64* __restrict__ gate_up_ptrs, const int* __restrict__ pair_offsets,
                        const int* __restrict__ pair_rows, const float* __restrict__ x,
                        float* __restrict__ h, int hidden, int inter) {
    __shared__ float4 xs[MAX_PAIRS][TILE / 4];
    const int e = blockIdx.y;
    const int r = blockIdx.x * WARPS + threadIdx.x / 32;
    const bool active = r < inter;
    const unsigned char* base = reinterpret_cast<const unsigned char*>(gate_up_ptrs[e]);
    const unsigned char* const w[2] = {base + u64(r) * row_bytes<Fmt>(hidden),
                                       base + u64(inter + r) * row_bytes<Fmt>(hidden)};
    for (int p0 = pair_offsets[e]; p0 < pair_offsets[e + 1]; p0 += MAX_PAIRS) {
        const int np = min(MAX_PAIRS, pair_offsets[e + 1] - p0);
        float acc[2][MAX_PAIRS];
        warp_dots<Fmt, 2>(xs, w, active, x, pair_rows, p0, np, hidden, acc);
        if (active && threadIdx.x % 32 == 0) {
            for (int p = 0; p < np; ++p) h[u64(p0 + p) * inter + r] = silu(acc[0][p]) * acc[1][p];
        }
    }
}

template <typename Fmt>
__device__ void down(const u64* __restrict__ down_ptrs, const int* __restrict__ pair_offsets,
                     const float* __restrict__ pair_weights, const float* __restrict__ h,
                     float* __restrict__ y, int hidden, int inter) {
    __shared__ float4 xs[MAX_PAIRS][TILE / 4];
    const int e = blockIdx.y;
    const int r = blockIdx.x * WARPS + threadIdx.x / 32;
    const bool active = r < hidden;
    const unsigned char* const w[1] = {reinterpret_cast<const unsigned char*>(down_ptrs[e]) +
                                       u64(r) * row_bytes<Fmt>(inter)};
    for (int p0 = pair_offsets[e]; p0 < pair_offsets[e + 1]; p0 += MAX_PAIRS) {
        const int np = min(MAX_PAIRS, pair_offsets[e + 1] - p0);
        float acc[1][MAX_PAIRS];
        warp_dots<Fmt, 1>(xs, w, active, h, nullptr, p0, np, inter, acc);
        if (active && threadIdx.x % 32 == 0) {
            for (int p = 0; p < np; ++p) y[u64(p0 + p) * hidden + r] = pair_weights[p0 + p] * acc[0][p];
        }
    }
}

#define MOE_FORMAT_KERNELS(name, Fmt)                                                           \
    extern "C" __global__ void __launch_bounds__(MOE_THREADS, MIN_BLOCKS) moe_gate_up_##name(              \
        const u64* gate_up_ptrs, const int* pair_offsets, const int* pair_rows, const float* x, \
        float* h, int hidden, int inter) {                                                      \
        gate_up<Fmt>(gate_up_ptrs, pair_offsets, pair_rows, x, h, hidden, inter);              \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(MOE_THREADS, MIN_BLOCKS) moe_down_##name(                 \
        const u64* down_ptrs, const int* pair_offsets, const float* pair_weights,              \
        const float* h, float* y, int hidden, int inter) {                                      \
        down<Fmt>(down_ptrs, pair_offsets, pair_weights, h, y, hidden, inter);                 \
    }

MOE_FORMAT_KERNELS(f16, F16)
MOE_FORMAT_KERNELS(fp8, Fp8)
MOE_FORMAT_KERNELS(q8, Q8)
MOE_FORMAT_KERNELS(q4, Q4)
MOE_FORMAT_KERNELS(mxfp4, Mxfp4)
MOE_FORMAT_KERNELS(q2, Q2)

extern "C" __global__ void moe_combine(const int* __restrict__ token_offsets,
                                       const int* __restrict__ token_pairs,
                                       const float* __restrict__ y, float* __restrict__ out,
                                       int hidden) {
    const int t = blockIdx.x;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        float s = 0.0f;
        for (int i = token_offsets[t]; i < token_offsets[t + 1]; ++i) {
            s += y[u64(token_pairs[i]) * hidden + c];
        }
        out[u64(t) * hidden + c] = s;
    }
}
