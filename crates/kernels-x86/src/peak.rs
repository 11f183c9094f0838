//! The `qlinear bench` peak probes of the x86 ISAs (their table entries' `peak`): the
//! core MAC instruction of each ISA's kernel in a loop of
//! [`PEAK_ACCUMULATORS`] independent accumulator chains, enough to be throughput- rather
//! than latency-bound. Each function carries its ISA's full feature list, as the kernel
//! files do (checked by `isa`'s attribute test).

use std::arch::x86_64::*;
use std::hint::black_box;

use qlinear_reference::isa::PEAK_ACCUMULATORS;

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

/// `vpdpbusd zmm`: 64 MACs per instruction. Returns the MACs done.
///
/// # Safety
/// The avx512vnni table entry's detection succeeded.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) unsafe fn vpdpbusd_zmm(iters: u64) -> f64 {
    let a = black_box(_mm512_set1_epi8(3));
    let b = black_box(_mm512_set1_epi8(-5));
    black_box(twelve_chains!(
        _mm512_setzero_si512(),
        iters,
        |v: __m512i| _mm512_reduce_add_epi32(v) as i64,
        acc => _mm512_dpbusd_epi32(*acc, a, b)
    ));
    (iters * PEAK_ACCUMULATORS * 64) as f64
}

/// `vpdpbusd ymm` (VEX): 32 MACs per instruction. Returns the MACs done.
///
/// # Safety
/// The avxvnni table entry's detection succeeded.
#[target_feature(enable = "avx2,fma,avxvnni")]
pub(crate) unsafe fn vpdpbusd_ymm(iters: u64) -> f64 {
    let a = black_box(_mm256_set1_epi8(3));
    let b = black_box(_mm256_set1_epi8(-5));
    black_box(twelve_chains!(
        _mm256_setzero_si256(),
        iters,
        |v: __m256i| _mm256_extract_epi32::<0>(v) as i64,
        acc => _mm256_dpbusd_avx_epi32(*acc, a, b)
    ));
    (iters * PEAK_ACCUMULATORS * 32) as f64
}

/// The exact-AVX2 kernel's mix: `vpmaddwd` (16 i16 x i16 products summed in pairs)
/// then `vpaddd` into the accumulator, 16 MACs per pair. The multiply reads the
/// accumulator itself so it cannot be hoisted out of the loop; twelve chains of latency
/// ~4 cycles keep both multiply ports busy. Returns the MACs done.
///
/// # Safety
/// The avx2 table entry's detection succeeded.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn vpmaddwd_ymm(iters: u64) -> f64 {
    let b = black_box(_mm256_set1_epi16(7));
    let init = black_box(_mm256_set1_epi16(1));
    black_box(twelve_chains!(
        init,
        iters,
        |v: __m256i| _mm256_extract_epi32::<0>(v) as i64,
        acc => _mm256_add_epi32(*acc, _mm256_madd_epi16(*acc, b))
    ));
    (iters * PEAK_ACCUMULATORS * 16) as f64
}

/// `tdpbusd` on 2 x 2 accumulator tiles, reloading its two A and two B tiles from L1
/// every iteration as the kernel's inner loop does: 16,384 MACs per `tdpbusd`. Returns
/// the MACs done.
///
/// # Safety
/// The amx table entry's detection succeeded.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) unsafe fn tdpbusd(iters: u64) -> f64 {
    use crate::amx::{Hardware, TileUnit, MACS_PER_TDPBUSD};
    let a = black_box([3u8; 1024]);
    let b = black_box([0xFBu8; 1024]);
    let mut c = [0u8; 1024];
    let mut hw = Hardware;
    // SAFETY: AMX is available (caller); the loads read `a` / `b` (16 rows of 64 bytes
    // at stride 64), the store writes `c`.
    unsafe {
        hw.configure();
        hw.zero_accumulators();
        for _ in 0..iters {
            hw.load_a(0, a.as_ptr(), 64);
            hw.load_a(1, a.as_ptr(), 64);
            hw.load_b(0, b.as_ptr(), 64);
            hw.load_b(1, b.as_ptr(), 64);
            hw.multiply(2);
        }
        hw.store_accumulator(0, 0, c.as_mut_ptr(), 64);
        hw.release();
    }
    black_box(c);
    (iters * 4 * MACS_PER_TDPBUSD as u64) as f64
}
