//! Memory read bandwidth of this machine, the yardstick for the memory-bound decode kernels.
//! It measures streaming reads only (no writes, no latency).
//!
//! Two patterns are timed and the faster counts, since which one a machine serves best differs:
//! each thread reading its chunks as one plain sequential stream (as the single-row matvec tiles
//! read weights), and as several interleaved streams with software prefetch (as tiles of
//! several rows do). On the 2-vCPU AVX-512 development VM the sequential pattern is 10-20%
//! faster (for example 55.9 against 45.4 GB/s in one run); on the machine where the
//! interleaved pattern was first measured, one stream per thread read 23 GB/s against 30.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::pool::Pool;

/// A way of reading a slice, returning a wrapping sum of it.
type Sum = fn(&[u64]) -> u64;

/// Runs of the measurement; the best is reported.
const RUNS: usize = 3;

/// Bytes per second that `pool`'s threads together read from a `bytes`-long buffer, best of
/// three runs. Use a buffer well beyond the last-level cache (1 GiB or more) to measure DRAM.
pub fn measure_read_bandwidth(pool: &Pool, bytes: usize) -> f64 {
    let words = (bytes / 8).max(1024);
    let threads = pool.threads().max(1);
    // Writing every element backs every page (a zeroed allocation could map one shared page).
    let buf: Vec<u64> = (0..words as u64).collect();
    let interleaved: Vec<&[u64]> = buf.chunks(words.div_ceil(threads)).collect();
    let sequential: Vec<&[u64]> = buf.chunks(words.div_ceil(4 * threads)).collect();
    let patterns: [(&[&[u64]], Sum); 2] =
        [(&interleaved, sum_words), (&sequential, sum_sequential)];
    let mut best = 0.0f64;
    for _ in 0..RUNS {
        for (slices, sum) in patterns {
            let total = AtomicU64::new(0);
            let start = Instant::now();
            pool.parallel_for(slices.len(), |c| {
                total.fetch_add(sum(slices[c]), Ordering::Relaxed);
            });
            let secs = start.elapsed().as_secs_f64();
            black_box(total.load(Ordering::Relaxed));
            if secs > 0.0 {
                best = best.max((words * 8) as f64 / secs);
            }
        }
    }
    best
}

/// Wrapping sum of `v`, read front to back as one stream.
fn sum_sequential(v: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked on the line above).
        return unsafe { sum_sequential_avx2(v) };
    }
    sum_sequential_portable(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_sequential_avx2(v: &[u64]) -> u64 {
    sum_sequential_portable(v)
}

#[inline(always)]
fn sum_sequential_portable(v: &[u64]) -> u64 {
    let mut acc = [0u64; STEP];
    let mut chunks = v.chunks_exact(STEP);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a = a.wrapping_add(*x);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u64, |a, x| a.wrapping_add(*x));
    acc.iter().fold(tail, |a, x| a.wrapping_add(*x))
}

/// Independent read streams per thread (one core alone keeps too few lines in flight).
const STREAMS: usize = 8;

/// Wrapping sum of `v`, read as [`STREAMS`] interleaved streams with software prefetch.
fn sum_words(v: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked on the line above).
        return unsafe { sum_words_avx2(v) };
    }
    sum_words_portable(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_words_avx2(v: &[u64]) -> u64 {
    sum_words_portable(v)
}

/// Words per step of one stream (four cache lines).
const STEP: usize = 32;
/// Prefetch distance in words (2 KiB).
#[cfg(target_arch = "x86_64")]
const AHEAD: usize = 256;

#[inline(always)]
fn sum_words_portable(v: &[u64]) -> u64 {
    let per_stream = v.len() / STREAMS / STEP * STEP;
    let mut acc = [[0u64; 8]; STREAMS];
    let mut i = 0;
    while i < per_stream {
        for (s, a) in acc.iter_mut().enumerate() {
            let start = s * per_stream + i;
            #[cfg(target_arch = "x86_64")]
            for line in 0..STEP / 8 {
                let p = v.as_ptr().wrapping_add(start + AHEAD + 8 * line);
                // SAFETY: prefetch is a hint; it never faults, whatever the address.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
                };
            }
            for chunk in v[start..start + STEP].chunks_exact(8) {
                for (x, y) in a.iter_mut().zip(chunk) {
                    *x = x.wrapping_add(*y);
                }
            }
        }
        i += STEP;
    }
    let tail = v[per_stream * STREAMS..]
        .iter()
        .fold(0u64, |a, x| a.wrapping_add(*x));
    acc.iter().flatten().fold(tail, |a, x| a.wrapping_add(*x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match() {
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(sum_words(&v), 999 * 1000 / 2);
        assert_eq!(sum_sequential(&v), 999 * 1000 / 2);
    }

    #[test]
    fn reports_a_positive_rate() -> Result<(), crate::KernelError> {
        let pool = Pool::new(2)?;
        let bw = measure_read_bandwidth(&pool, 8 << 20);
        assert!(bw.is_finite() && bw > 1e8, "{bw}");
        Ok(())
    }
}
