//! Machine-limit probes of `qlinear bench`, measured at the start of a run (the peaks
//! once more at the end, keeping the better figure: shared machines are noisy).
//!
//! * Peak MAC rate of each backend's core instruction (its "instruction mix"), with
//!   enough independent accumulators to be throughput- rather than latency-bound. The
//!   loops are the ISA table entries' `peak` probes (in the kernel crates, next to the
//!   kernels: `vpdpbusd zmm` for avx512vnni, `sdot` for neondot, ...); a new ISA's entry
//!   brings its probe. The reference backend has none.
//! * Streaming-read bandwidth: summing a buffer with the widest loads available, for
//!   L2-, L3- and DRAM-sized buffers and for each M = 1 weight size of the run.
//!
//! With `threads > 1` every probe runs on that many threads at once (disjoint buffer
//! slices for the bandwidth probe) and reports the total rate, so a result's fraction is
//! against what that many cores reach together.

use std::hint::black_box;
use std::time::Instant;

use qlinear::unstable::{isa_entry, PeakProbe as PeakProbeDesc, PEAK_ACCUMULATORS};
use qlinear::Backend;

/// The peak of one backend's instruction mix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeakProbe {
    /// Backend name.
    pub backend: &'static str,
    /// What was timed, e.g. `"vpdpbusd zmm"`.
    pub instruction: &'static str,
    /// MACs per instruction (per pair for the AVX2 mix).
    pub macs_per_instr: u32,
    /// Measured rate over all probe threads, in GMAC/s.
    pub gmacs: f64,
    /// Threads that ran the probe at once.
    pub threads: usize,
}

/// One streaming-read bandwidth measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamProbe {
    /// `"L2"`, `"L3"`, `"DRAM"` or `"weight KxN"`.
    pub label: String,
    /// Buffer size in bytes.
    pub bytes: usize,
    /// Measured rate in GB/s (1e9 bytes per second).
    pub gbps: f64,
    /// Threads that read at once.
    pub threads: usize,
}

/// The ISA table's peak probe for a backend, or `None` (reference, an ISA of another
/// architecture, or one this CPU lacks).
fn peak_loop(backend: Backend) -> Option<PeakProbeDesc> {
    let entry = isa_entry(backend.isa()?)?;
    entry.available().ok()?;
    entry.peak
}

/// Runs `work` on `threads` threads at once (released together by a barrier) and
/// returns the time from the first thread's start to the last thread's end, as each
/// thread saw it (thread start-up is not counted).
fn timed_parallel<F: Fn(usize) + Sync>(threads: usize, work: F) -> f64 {
    if threads <= 1 {
        let t = Instant::now();
        work(0);
        return t.elapsed().as_secs_f64();
    }
    let barrier = std::sync::Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    work(i);
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread panicked"))
            .collect()
    });
    let first = spans.iter().map(|s| s.0).min().expect("threads >= 1");
    let last = spans.iter().map(|s| s.1).max().expect("threads >= 1");
    (last - first).as_secs_f64()
}

/// Measures the peak MAC rate of `backend`'s instruction mix, or `None` when it has no
/// probe: the best of many short runs (~2 ms each) until about `seconds` are spent.
/// Short runs, like the short forward calls they are compared with, usually run
/// without being preempted on a busy shared machine; long ones rarely do.
pub fn peak(backend: Backend, threads: usize, seconds: f64) -> Option<PeakProbe> {
    let PeakProbeDesc {
        instruction,
        macs_per_instr,
        run,
    } = peak_loop(backend)?;
    // SAFETY: `peak_loop` returns a probe only after its ISA's detection succeeded (the
    // probes need no per-thread state).
    let run = |iters: u64| unsafe { run(iters) };
    let threads = threads.max(1);
    // Calibrate: iterations for about 2 ms of one thread.
    let mut iters = 256u64;
    loop {
        let t = Instant::now();
        black_box(run(iters));
        let dt = t.elapsed().as_secs_f64();
        if dt > 5e-4 {
            iters = ((iters as f64) * 2e-3 / dt).max(1.0) as u64;
            break;
        }
        iters *= 4;
    }
    let mut best = 0f64;
    let mut spent = 0.0;
    let mut reps = 0;
    while reps < 8 || (spent < seconds && reps < 100_000) {
        let dt = timed_parallel(threads, |_| {
            black_box(run(black_box(iters)));
        });
        let macs = run_macs(macs_per_instr, iters) * threads as f64;
        best = best.max(macs / dt / 1e9);
        spent += dt;
        reps += 1;
    }
    Some(PeakProbe {
        backend: backend.name(),
        instruction,
        macs_per_instr,
        gmacs: best,
        threads,
    })
}

fn run_macs(macs_per_instr: u32, iters: u64) -> f64 {
    (iters * PEAK_ACCUMULATORS) as f64 * macs_per_instr as f64
}

/// Sums `buf` as u64 lanes with the widest loads this CPU has.
fn sum_bytes(buf: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx512f() {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { x86::sum_avx512(buf) };
        }
        if x86::has_avx2() {
            // SAFETY: AVX2 was detected at run time.
            return unsafe { x86::sum_avx2(buf) };
        }
    }
    sum_generic(buf)
}

/// Portable sum of 8-byte lanes with 8 independent accumulators (the compiler
/// vectorizes it with the baseline SIMD width).
fn sum_generic(buf: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = buf.chunks_exact(64);
    for c in &mut chunks {
        for (j, a) in acc.iter_mut().enumerate() {
            let v = u64::from_ne_bytes(c[j * 8..j * 8 + 8].try_into().expect("8 bytes"));
            *a = a.wrapping_add(v);
        }
    }
    let tail: u64 = chunks.remainder().iter().map(|&b| b as u64).sum();
    acc.iter().fold(tail, |s, &a| s.wrapping_add(a))
}

/// Streaming-read bandwidth for a buffer of `bytes` (split across `threads` readers):
/// best of several timed passes, repeated until about `seconds` have been spent.
///
/// A buffer that cannot be allocated is an error (callers check sizes first; this is
/// the last line of defence against an abort).
pub fn stream(
    label: impl Into<String>,
    bytes: usize,
    threads: usize,
    seconds: f64,
) -> Result<StreamProbe, String> {
    let label = label.into();
    let threads = threads.max(1);
    let bytes = bytes.max(threads.saturating_mul(64));
    // Non-zero contents so every page is really backed by memory.
    let mut buf = Vec::new();
    buf.try_reserve_exact(bytes)
        .map_err(|e| format!("stream probe {label}: {bytes} bytes: {e}"))?;
    buf.resize(bytes, 1u8);
    let per = bytes.div_ceil(threads);
    // Each timed run reads the buffer `passes` times (at least ~64 MiB in total), so
    // small, cache-resident buffers are timed over milliseconds, not microseconds.
    let passes = (64usize << 20).div_ceil(bytes).max(1);
    let run = |i: usize| {
        let lo = (i * per).min(bytes);
        let hi = ((i + 1) * per).min(bytes);
        for _ in 0..passes {
            black_box(sum_bytes(black_box(&buf[lo..hi])));
        }
    };
    // Warm-up run (also faults the pages in).
    timed_parallel(threads, run);
    let mut best = f64::INFINITY;
    let mut spent = 0.0;
    let mut reps = 0;
    while reps < 3 || (spent < seconds && reps < 1_000) {
        let dt = timed_parallel(threads, run);
        best = best.min(dt);
        spent += dt;
        reps += 1;
    }
    Ok(StreamProbe {
        label,
        bytes,
        gbps: bytes as f64 * passes as f64 / best / 1e9,
        threads,
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2")
    }
    pub fn has_avx512f() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    /// Sums `buf` as u64 lanes with 64-byte loads, four independent accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sum_avx512(buf: &[u8]) -> u64 {
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut chunks = buf.chunks_exact(256);
        for c in &mut chunks {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: `c` has 256 bytes, so bytes [64j, 64j + 64) are in bounds;
                // the load is unaligned.
                let v = unsafe { _mm512_loadu_si512(c.as_ptr().add(64 * j).cast()) };
                *a = _mm512_add_epi64(*a, v);
            }
        }
        let s = _mm512_add_epi64(
            _mm512_add_epi64(acc[0], acc[1]),
            _mm512_add_epi64(acc[2], acc[3]),
        );
        let tail: u64 = chunks.remainder().iter().map(|&b| b as u64).sum();
        (_mm512_reduce_add_epi64(s) as u64).wrapping_add(tail)
    }

    /// Sums `buf` as u64 lanes with 32-byte loads, four independent accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sum_avx2(buf: &[u8]) -> u64 {
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut chunks = buf.chunks_exact(128);
        for c in &mut chunks {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: `c` has 128 bytes, so bytes [32j, 32j + 32) are in bounds;
                // the load is unaligned.
                let v = unsafe { _mm256_loadu_si256(c.as_ptr().add(32 * j).cast()) };
                *a = _mm256_add_epi64(*a, v);
            }
        }
        let s = _mm256_add_epi64(
            _mm256_add_epi64(acc[0], acc[1]),
            _mm256_add_epi64(acc[2], acc[3]),
        );
        let mut lanes = [0u64; 4];
        // SAFETY: `lanes` is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), s) };
        let tail: u64 = chunks.remainder().iter().map(|&b| b as u64).sum();
        lanes.iter().fold(tail, |t, &l| t.wrapping_add(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_agree() {
        // Whole 256-byte blocks: every version sums the same u64 lanes.
        let buf: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(sum_bytes(&buf), sum_generic(&buf));
    }

    #[test]
    fn stream_probe_reports_positive_rate() {
        let p = stream("tiny", 1 << 16, 1, 0.001).unwrap();
        assert!(p.gbps > 0.0 && p.gbps.is_finite());
    }
}
