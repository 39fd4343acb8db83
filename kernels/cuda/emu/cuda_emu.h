// A small emulation of the CUDA thread model, so kernel sources compile as C++ and run on a CPU.
//
// `emu::launch(grid, block, body)` runs `body` once per thread of every block. The blocks run one
// after another; the threads of a block are cooperative fibers (ucontext) on the calling thread,
// switched only at the points where CUDA threads synchronise:
//   - `__syncthreads()` waits until every thread of the block that has not exited arrives;
//   - `__shfl_xor_sync` / `__shfl_down_sync` wait until every lane named in the mask arrives, then
//     each lane reads the value of its source lane as it was at the call.
// `__shared__` variables are function statics: one copy, used by one block at a time, as on a GPU.
// Misuse that is undefined behaviour on a GPU stops the program with a message instead: a shuffle
// whose mask names a lane that exited or waits at `__syncthreads()`, or reads a lane outside the
// mask. Threads that exited count as arrived at `__syncthreads()`, as on current GPUs.
//
// What it does not model: memory ordering between threads other than at barriers, warp-level
// scheduling, timing. Kernels that rely on implicit warp-synchronous execution without `_sync`
// primitives are wrong on a GPU and may pass here; the kernels in this repository do not.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define MOE_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct float4 {
    float x, y, z, w;
};

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

inline float __expf(float x) { return std::exp(x); }

inline float __uint_as_float(unsigned int bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

using std::max;
using std::min;

// IEEE binary16 to binary32, exact for every input (subnormals, infinities, NaN).
inline float f16_to_f32(unsigned short h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        int e = 113;
        while ((mant & 0x400u) == 0) {
            mant <<= 1;
            --e;
        }
        bits = sign | (uint32_t(e) << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

namespace emu {

[[noreturn]] inline void fail(const char* what, unsigned thread) {
    std::fprintf(stderr, "cuda emulation: %s (thread %u)\n", what, thread);
    std::exit(70);
}

enum class State { Ready, AtBarrier, AtShuffle, Done };

struct Thread {
    ucontext_t context;
    std::unique_ptr<char[]> stack;
    State state = State::Ready;
    uint3 index{};
    uint64_t shuffle_value = 0;
    unsigned shuffle_source = 0;
    unsigned shuffle_mask = 0;
};

struct Block {
    uint3 index{};
    uint3 dim{};
    uint3 grid{};
    std::vector<Thread> threads;
    ucontext_t scheduler;
    unsigned current = 0;
    const std::function<void()>* body = nullptr;
};

constexpr size_t STACK_BYTES = 256 * 1024;

inline Block& block() {
    static Block b;
    return b;
}

inline Thread& self() { return block().threads[block().current]; }

inline void yield(State state) {
    Thread& t = self();
    t.state = state;
    swapcontext(&t.context, &block().scheduler);
}

inline void entry() {
    (*block().body)();
    self().state = State::Done;
}

// Resolves every warp whose shuffle is complete; returns whether any thread was released.
inline bool release_shuffles() {
    Block& b = block();
    bool released = false;
    const unsigned n = unsigned(b.threads.size());
    for (unsigned w = 0; w * 32 < n; ++w) {
        Thread* lanes = &b.threads[w * 32];
        const unsigned width = std::min(32u, n - w * 32);
        bool waiting = false;
        for (unsigned l = 0; l < width; ++l) waiting |= lanes[l].state == State::AtShuffle;
        if (!waiting) continue;
        for (unsigned l = 0; l < width; ++l) {
            const Thread& t = lanes[l];
            if (t.state != State::AtShuffle) continue;
            for (unsigned other = 0; other < 32; ++other) {
                if (!(t.shuffle_mask >> other & 1)) continue;
                if (other >= width) fail("shuffle mask names a lane that does not exist", w * 32 + l);
                if (lanes[other].state == State::Done) {
                    fail("shuffle mask names a lane that has exited", w * 32 + l);
                }
                if (lanes[other].state == State::AtBarrier) {
                    fail("shuffle mask names a lane waiting at __syncthreads", w * 32 + l);
                }
            }
            if (!(t.shuffle_mask >> t.shuffle_source & 1)) {
                fail("shuffle source lane is outside the mask", w * 32 + l);
            }
        }
        uint64_t values[32];
        for (unsigned l = 0; l < width; ++l) values[l] = lanes[l].shuffle_value;
        for (unsigned l = 0; l < width; ++l) {
            if (lanes[l].state != State::AtShuffle) continue;
            lanes[l].shuffle_value = values[lanes[l].shuffle_source];
            lanes[l].state = State::Ready;
            released = true;
        }
    }
    return released;
}

inline void run_block() {
    Block& b = block();
    const unsigned n = b.dim.x * b.dim.y * b.dim.z;
    b.threads.resize(n);
    for (unsigned i = 0; i < n; ++i) {
        Thread& t = b.threads[i];
        if (!t.stack) t.stack.reset(new char[STACK_BYTES]);
        t.state = State::Ready;
        t.index = uint3{i % b.dim.x, i / b.dim.x % b.dim.y, i / (b.dim.x * b.dim.y)};
        getcontext(&t.context);
        t.context.uc_stack.ss_sp = t.stack.get();
        t.context.uc_stack.ss_size = STACK_BYTES;
        t.context.uc_link = &b.scheduler;
        makecontext(&t.context, entry, 0);
    }
    for (;;) {
        for (unsigned i = 0; i < n; ++i) {
            if (b.threads[i].state != State::Ready) continue;
            b.current = i;
            swapcontext(&b.scheduler, &b.threads[i].context);
        }
        if (release_shuffles()) continue;
        // No thread is ready and no shuffle is pending: all wait at a barrier or have exited.
        bool waiting = false;
        for (Thread& t : b.threads) {
            if (t.state == State::AtBarrier) {
                t.state = State::Ready;
                waiting = true;
            }
        }
        if (!waiting) return;
    }
}

// Runs `body` as a kernel over `grid` x `threads`.
inline void launch(dim3 grid, dim3 threads, const std::function<void()>& body) {
    Block& b = block();
    b.body = &body;
    b.dim = uint3{threads.x, threads.y, threads.z};
    b.grid = uint3{grid.x, grid.y, grid.z};
    for (unsigned z = 0; z < grid.z; ++z) {
        for (unsigned y = 0; y < grid.y; ++y) {
            for (unsigned x = 0; x < grid.x; ++x) {
                b.index = uint3{x, y, z};
                run_block();
            }
        }
    }
}

template <typename T>
T shuffle(unsigned mask, T value, unsigned source) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffled values fit in 64 bits");
    Thread& t = self();
    t.shuffle_value = 0;
    std::memcpy(&t.shuffle_value, &value, sizeof value);
    t.shuffle_source = source;
    t.shuffle_mask = mask;
    yield(State::AtShuffle);
    T out;
    std::memcpy(&out, &self().shuffle_value, sizeof out);
    return out;
}

inline unsigned lane() {
    const Block& b = block();
    return b.current % 32;
}

}  // namespace emu

#define threadIdx (emu::self().index)
#define blockIdx (emu::block().index)
#define blockDim (emu::block().dim)
#define gridDim (emu::block().grid)
#define warpSize 32

inline void __syncthreads() { emu::yield(emu::State::AtBarrier); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    const unsigned lane = emu::lane();
    const unsigned base = lane - lane % unsigned(width);
    const unsigned source = (lane ^ unsigned(lane_mask)) < base + unsigned(width)
                                ? (lane ^ unsigned(lane_mask))
                                : lane;
    return emu::shuffle(mask, value, source);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    const unsigned lane = emu::lane();
    const unsigned source = lane % unsigned(width) + delta < unsigned(width) ? lane + delta : lane;
    return emu::shuffle(mask, value, source);
}
