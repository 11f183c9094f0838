//! Machine-limit probes of `qlinear bench`, measured at the start of a run (the peaks
//! once more at the end, keeping the better figure: shared machines are noisy).
//!
//! * Peak MAC rate of each backend's core instruction (its "instruction mix"), with
//!   enough independent accumulators to be throughput- rather than latency-bound:
//!   `vpdpbusd zmm` (avx512vnni, 64 MACs), `vpdpbusd ymm` VEX (avxvnni, 32 MACs),
//!   `vpmaddwd ymm` + `vpaddd ymm` pairs (avx2, 16 MACs per pair), `sdot` (neondot, 16),
//!   `usmmla` (i8mm, 32), `smlal`/`smlal2` (neon, 8). The reference backend has none.
//! * Streaming-read bandwidth: summing a buffer with the widest loads available, for
//!   L2-, L3- and DRAM-sized buffers and for each M = 1 weight size of the run.
//!
//! With `threads > 1` every probe runs on that many threads at once (disjoint buffer
//! slices for the bandwidth probe) and reports the total rate, so a result's fraction is
//! against what that many cores reach together.

use std::hint::black_box;
use std::time::Instant;

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

/// A probe loop: runs `iters` iterations, returns the MACs done.
type PeakLoop = fn(u64) -> f64;

/// `(instruction, MACs per instruction, loop)` for a backend, or `None` (reference, or
/// an instruction this CPU / build lacks).
fn peak_loop(backend: Backend) -> Option<(&'static str, u32, PeakLoop)> {
    #[cfg(target_arch = "x86_64")]
    {
        match backend {
            Backend::Avx512Vnni if x86::has_avx512vnni() => {
                return Some(("vpdpbusd zmm", 64, x86::run_vpdpbusd_zmm))
            }
            Backend::AvxVnni if x86::has_avxvnni() => {
                return Some(("vpdpbusd ymm (VEX)", 32, x86::run_vpdpbusd_ymm))
            }
            Backend::Avx2 if x86::has_avx2() => {
                return Some(("vpmaddwd ymm + vpaddd ymm", 16, x86::run_vpmaddwd_ymm))
            }
            _ => {}
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        match backend {
            Backend::Neon if arm::has_neon() => {
                return Some(("smlal/smlal2 .8h", 8, arm::run_smlal))
            }
            Backend::NeonDot if arm::has_dotprod() => return Some(("sdot .4s", 16, arm::run_sdot)),
            Backend::I8mm if arm::has_i8mm() => return Some(("usmmla .4s", 32, arm::run_usmmla)),
            _ => {}
        }
    }
    let _ = backend;
    None
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
    let (instruction, macs_per_instr, run) = peak_loop(backend)?;
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

/// Instructions per probe-loop iteration (the same for every loop: one per accumulator).
pub const PEAK_ACCUMULATORS: u64 = 12;

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
    use std::hint::black_box;

    use super::PEAK_ACCUMULATORS;

    pub fn has_avx512vnni() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")
    }
    pub fn has_avxvnni() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni")
    }
    pub fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2")
    }
    pub fn has_avx512f() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    const _: () = assert!(PEAK_ACCUMULATORS == 12);

    /// Twelve independent accumulator chains `acc_i = op(acc_i)`, `iters` times.
    /// Every op reads its accumulator, so nothing can be hoisted or merged.
    macro_rules! twelve_chains {
        ($zero:expr, $iters:expr, $reduce:expr, $acc:ident => $op:expr) => {{
            let mut accs = [$zero; 12];
            for _ in 0..$iters {
                // Unrolled by the compiler: 12 independent ops per iteration.
                for $acc in accs.iter_mut() {
                    *$acc = $op;
                }
            }
            accs.iter()
                .map(|a| $reduce(*a))
                .fold(0i64, |s, v| s.wrapping_add(v))
        }};
    }

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512 VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn vpdpbusd_zmm(iters: u64) -> i64 {
        let a = black_box(_mm512_set1_epi8(3));
        let b = black_box(_mm512_set1_epi8(-5));
        twelve_chains!(
            _mm512_setzero_si512(),
            iters,
            |v: __m512i| _mm512_reduce_add_epi32(v) as i64,
            acc => _mm512_dpbusd_epi32(*acc, a, b)
        )
    }

    /// # Safety
    /// The CPU must support AVX2 and AVX-VNNI.
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn vpdpbusd_ymm(iters: u64) -> i64 {
        let a = black_box(_mm256_set1_epi8(3));
        let b = black_box(_mm256_set1_epi8(-5));
        twelve_chains!(
            _mm256_setzero_si256(),
            iters,
            |v: __m256i| _mm256_extract_epi32::<0>(v) as i64,
            acc => _mm256_dpbusd_avx_epi32(*acc, a, b)
        )
    }

    /// The exact-AVX2 kernel's mix: `vpmaddwd` (16 i16 x i16 products summed in pairs)
    /// then `vpaddd` into the accumulator. The multiply reads the accumulator itself so
    /// it cannot be hoisted out of the loop; twelve chains of latency ~4 cycles keep
    /// both multiply ports busy.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn vpmaddwd_ymm(iters: u64) -> i64 {
        let b = black_box(_mm256_set1_epi16(7));
        let init = black_box(_mm256_set1_epi16(1));
        twelve_chains!(
            init,
            iters,
            |v: __m256i| _mm256_extract_epi32::<0>(v) as i64,
            acc => _mm256_add_epi32(*acc, _mm256_madd_epi16(*acc, b))
        )
    }

    pub fn run_vpdpbusd_zmm(iters: u64) -> f64 {
        assert!(has_avx512vnni());
        // SAFETY: feature presence asserted just above.
        black_box(unsafe { vpdpbusd_zmm(iters) });
        (iters * PEAK_ACCUMULATORS * 64) as f64
    }
    pub fn run_vpdpbusd_ymm(iters: u64) -> f64 {
        assert!(has_avxvnni());
        // SAFETY: feature presence asserted just above.
        black_box(unsafe { vpdpbusd_ymm(iters) });
        (iters * PEAK_ACCUMULATORS * 32) as f64
    }
    pub fn run_vpmaddwd_ymm(iters: u64) -> f64 {
        assert!(has_avx2());
        // SAFETY: feature presence asserted just above.
        black_box(unsafe { vpmaddwd_ymm(iters) });
        (iters * PEAK_ACCUMULATORS * 16) as f64
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

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::asm;

    use super::PEAK_ACCUMULATORS;

    pub fn has_neon() -> bool {
        std::arch::is_aarch64_feature_detected!("neon")
    }
    pub fn has_dotprod() -> bool {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    pub fn has_i8mm() -> bool {
        std::arch::is_aarch64_feature_detected!("i8mm")
    }

    const _: () = assert!(PEAK_ACCUMULATORS == 12);

    /// Twelve accumulators v0..v11, operands v12, v13; `$n` iterations of twelve
    /// instructions `$op vI, v12, v13` written by the caller.
    macro_rules! asm_loop {
        ($iters:expr, $($body:literal),+ $(,)?) => {
            if $iters > 0 {
                asm!(
                    "movi v12.16b, #3",
                    "movi v13.16b, #5",
                    "movi v0.16b, #0", "movi v1.16b, #0", "movi v2.16b, #0", "movi v3.16b, #0",
                    "movi v4.16b, #0", "movi v5.16b, #0", "movi v6.16b, #0", "movi v7.16b, #0",
                    "movi v8.16b, #0", "movi v9.16b, #0", "movi v10.16b, #0", "movi v11.16b, #0",
                    "2:",
                    $($body,)+
                    "subs {n}, {n}, #1",
                    "b.ne 2b",
                    n = inout(reg) $iters => _,
                    out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _,
                    out("v5") _, out("v6") _, out("v7") _, out("v8") _, out("v9") _,
                    out("v10") _, out("v11") _, out("v12") _, out("v13") _,
                    options(nostack, nomem),
                )
            }
        };
    }

    /// # Safety
    /// The CPU must support NEON dot product.
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn sdot_loop(iters: u64) {
        // SAFETY: registers only (declared clobbered), no memory; dotprod is enabled.
        unsafe {
            asm_loop!(
                iters,
                "sdot v0.4s, v12.16b, v13.16b",
                "sdot v1.4s, v12.16b, v13.16b",
                "sdot v2.4s, v12.16b, v13.16b",
                "sdot v3.4s, v12.16b, v13.16b",
                "sdot v4.4s, v12.16b, v13.16b",
                "sdot v5.4s, v12.16b, v13.16b",
                "sdot v6.4s, v12.16b, v13.16b",
                "sdot v7.4s, v12.16b, v13.16b",
                "sdot v8.4s, v12.16b, v13.16b",
                "sdot v9.4s, v12.16b, v13.16b",
                "sdot v10.4s, v12.16b, v13.16b",
                "sdot v11.4s, v12.16b, v13.16b",
            )
        }
    }

    /// # Safety
    /// The CPU must support I8MM.
    #[target_feature(enable = "neon,i8mm")]
    unsafe fn usmmla_loop(iters: u64) {
        // SAFETY: registers only (declared clobbered), no memory; i8mm is enabled.
        unsafe {
            asm_loop!(
                iters,
                "usmmla v0.4s, v12.16b, v13.16b",
                "usmmla v1.4s, v12.16b, v13.16b",
                "usmmla v2.4s, v12.16b, v13.16b",
                "usmmla v3.4s, v12.16b, v13.16b",
                "usmmla v4.4s, v12.16b, v13.16b",
                "usmmla v5.4s, v12.16b, v13.16b",
                "usmmla v6.4s, v12.16b, v13.16b",
                "usmmla v7.4s, v12.16b, v13.16b",
                "usmmla v8.4s, v12.16b, v13.16b",
                "usmmla v9.4s, v12.16b, v13.16b",
                "usmmla v10.4s, v12.16b, v13.16b",
                "usmmla v11.4s, v12.16b, v13.16b",
            )
        }
    }

    /// # Safety
    /// The CPU must support NEON.
    #[target_feature(enable = "neon")]
    unsafe fn smlal_loop(iters: u64) {
        // SAFETY: registers only (declared clobbered), no memory; NEON is enabled.
        unsafe {
            asm_loop!(
                iters,
                "smlal v0.8h, v12.8b, v13.8b",
                "smlal2 v1.8h, v12.16b, v13.16b",
                "smlal v2.8h, v12.8b, v13.8b",
                "smlal2 v3.8h, v12.16b, v13.16b",
                "smlal v4.8h, v12.8b, v13.8b",
                "smlal2 v5.8h, v12.16b, v13.16b",
                "smlal v6.8h, v12.8b, v13.8b",
                "smlal2 v7.8h, v12.16b, v13.16b",
                "smlal v8.8h, v12.8b, v13.8b",
                "smlal2 v9.8h, v12.16b, v13.16b",
                "smlal v10.8h, v12.8b, v13.8b",
                "smlal2 v11.8h, v12.16b, v13.16b",
            )
        }
    }

    pub fn run_sdot(iters: u64) -> f64 {
        assert!(has_dotprod());
        // SAFETY: feature presence asserted just above.
        unsafe { sdot_loop(iters) };
        (iters * PEAK_ACCUMULATORS * 16) as f64
    }
    pub fn run_usmmla(iters: u64) -> f64 {
        assert!(has_i8mm());
        // SAFETY: feature presence asserted just above.
        unsafe { usmmla_loop(iters) };
        (iters * PEAK_ACCUMULATORS * 32) as f64
    }
    pub fn run_smlal(iters: u64) -> f64 {
        assert!(has_neon());
        // SAFETY: feature presence asserted just above.
        unsafe { smlal_loop(iters) };
        (iters * PEAK_ACCUMULATORS * 8) as f64
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
