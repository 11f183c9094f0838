//! `neondot/gemm_4x16c4`: ARMv8.2-A dot product (`sdot`), activations flipped to s8.
//!
//! **ISA**: NEON + `dotprod` (FEAT_DotProd: Cortex-A55/A76 and later, Apple M1+,
//! Neoverse N1+). `sdot` / `udot` need both operands of the same signedness, but the
//! contract multiplies u8 activations by i8 weights. The kernel flips every activation
//! byte to s8 (`a' = a ^ 0x80 = a - 128`) and adds the correction back exactly:
//!
//! ```text
//! sum_k a*w = sum_k a'*w + 128 * sum_k w        (i32, every term exact)
//!   |sum a'*w| <= 128 * 128 * 33 025 < 2^31,  |128 * sum w| <= 2^14 * 33 025 < 2^31
//! ```
//!
//! Column sums are not passed to kernels, so the kernel computes `sum_k w` itself: while
//! the first row tile of a panel streams the panel, 4 extra `sdot`s per k-group against a
//! vector of ones accumulate it (`sdot` by vector: each lane sums its column's 4 bytes);
//! the remaining row tiles of the panel reuse it. For M >= 8 that is <= 12.5% of the MAC
//! instructions of the panel and for M >= 64 under 1%; the M = 1 GEMV pays 2 `sdot` per
//! 16 weight bytes, far above any memory bandwidth the weight stream can deliver.
//!
//! **Tile**: 4 rows x 16 columns, k-groups of 4 (`c4`); activations loaded 16 bytes
//! (4 k-groups) per row at a time.
//!
//! **Register budget** (32 V registers): 16 accumulators, 4 weight vectors (one k-group),
//! 4 activation vectors, 4 column-sum accumulators (first tile only), 1 ones vector and
//! 1 flip mask: 30.
//!
//! **Packed layout** (generic packer, `nr = 16`, `kr = 4`):
//!
//! ```text
//! panel p: columns 16p .. 16p+16, kpad = round_up(K, 4), kpad / 4 k-groups of 64 bytes
//! +----------------------------------------------------------------------+
//! | k-group 0: c0[k0..k3] c1[k0..k3] c2[k0..k3] c3[k0..k3] | c4..c7 | ... |  4 x ldr q
//! | k-group 1: c0[k4..k7] ...                                            |
//! | ...        (bytes past K and columns >= N are zero)                  |
//! +----------------------------------------------------------------------+
//!   ldr q = 4 columns x 4 k  ->  sdot acc.4s, w.16b, a'.4b[g]  (one row, lane g = k-group)
//! ```
//!
//! **Reads**: whole k-groups of the panels it computes (never past `kpad * 16` bytes of a
//! panel); activations in 16-byte loads while 16 bytes remain in the row, then the
//! `K % 16` tail is copied into a zeroed 16-byte stack buffer: never past `k`. (Tail
//! padding flips to -128 but meets the packer's zero weight bytes, and k-groups past
//! `kpad` are never issued.)
//!
//! **Inner loop** (per k-group, 4 x 16 tile): 4 `ldr q` weights (64 B) + 16 `sdot` by
//! element = 256 MACs; per 4 k-groups also 4 `ldr q` + 4 `eor` of activations (16 B per
//! k-group). So 16 MAC instructions per 80 bytes loaded (0.2 per byte), 5 loads per 16
//! MAC instructions (one per 3.2), 16 MACs per instruction, 3.2 MACs per byte. The first
//! row tile of each panel adds 4 `sdot` per k-group for the column sums. Release
//! disassembly (rustc 1.95, opt-level 3), 4 k-groups per iteration: the 4-row loop is
//! 64 `sdot`, 8 `ldp q`, 4 `ldr q`, 4 `eor`, 6 scalar = 86 instructions, no spills; the
//! first-tile variant adds the 16 column-sum `sdot`s and spills 6 registers (the extra
//! 4 accumulators exceed what LLVM keeps live), once per panel. XNNPACK's
//! dotprod tiles include this one (`qs8-gemm 4x16c4 neondot`, and for u8 activations
//! `qu8-gemm 4x16c4 neondot`, which runs `udot` on u8 x u8 weights offset by the weight
//! zero point and corrects with in-kernel activation sums) and wider 6x16c4 / 8x16c4
//! variants, which raise MACs per byte with more rows at the cost of all 32 registers;
//! ruy's dotprod kernel is 8x8 with the same 4-byte lane broadcasts (16 accumulators, one
//! load per 4 `sdot`). MLAS's `U8X8` dotprod kernel runs `udot` on u8 x u8 with weight
//! offsets. This kernel has no room in the shared packing for column sums, hence
//! computing them in-kernel.
//! (Comparisons are from the libraries' published kernel sets, not measured here.)
//!
//! `sdot` is emitted with `asm!` (the intrinsic is unstable); the `.arch_extension`
//! directive only lets the assembler accept it when a debug build keeps the
//! `#[inline(always)]` helper out of line: it still runs only behind the entry points,
//! i.e. after [`is_supported`].

use core::arch::aarch64::*;
use core::arch::asm;

use qlinear_reference::contract::{GemmArgs, KernelDesc, MPreference, PackedLayout};

use crate::common::{drive, load_partial_u8x16, zero_acc, Acc, Epilogue, Tile, NR};

/// Rows of the register tile.
pub const MR: usize = 4;
/// Consecutive K values per column in a k-group.
pub const KR: usize = 4;
/// The kernel's name.
pub const NAME: &str = "neondot/gemm_4x16c4";

/// Live vector registers in the first tile of a panel (the worst case).
const LIVE_REGS: usize = MR * NR / 4 + NR / 4 + MR + NR / 4 + 2;
const _: () = assert!(LIVE_REGS == 30 && LIVE_REGS <= 32);
const _: () = assert!(NR * KR == 64 && MR <= 4);
// Exactness of the flipped product and of the correction at the contract's K limit.
/// Largest |sum a' * w| (and |128 * sum w|) at the contract's K limit.
const FLIPPED_BOUND: i64 = 128 * 128 * qlinear_reference::K_LIMIT as i64;
const _: () = assert!(FLIPPED_BOUND < i32::MAX as i64);

entry_points!(NeonDot, ["neon", "dotprod"], gemm);

/// The descriptor of this kernel.
pub const DESC: KernelDesc = KernelDesc {
    name: NAME,
    isa: qlinear_reference::contract::Isa::NeonDot,
    mr: MR,
    layout: PackedLayout { nr: NR, kr: KR },
    m_pref: MPreference::ALL,
    is_supported,
    gemm_u8,
    gemm_f32,
    // NEON is baseline on aarch64: the portable loops already vectorize with it.
    min_max: qlinear_reference::activation::min_max_finite_portable,
    quantize: qlinear_reference::activation::quantize_rows_portable,
    pack_panel: None,
};

/// The kernel body behind both entry points.
///
/// # Safety
/// NEON + dotprod available; `args` / `epi` satisfy the kernel contract for the `c4`
/// layout above.
#[inline(always)]
unsafe fn gemm<E: Epilogue>(args: &GemmArgs<E::Out>, epi: &E) {
    let (k, lda) = (args.k, args.a_stride);
    let panel_bytes = PackedLayout { nr: NR, kr: KR }.panel_bytes(k);
    let mut tiles = Tiles {
        k,
        lda,
        corr: zero_acc(),
    };
    // SAFETY: forwarded contract; `Tiles` computes the rows the driver hands it, and the
    // first tile of each panel runs (with `first`) before the others.
    unsafe { drive(args, epi, MR, panel_bytes, &mut tiles) }
}

/// This kernel's [`Tile`]: K, the activation stride and the current panel's correction.
struct Tiles {
    k: usize,
    lda: usize,
    /// 128 x the column sums of the current panel, set by its first row tile.
    corr: Acc,
}

impl Tile for Tiles {
    #[inline(always)]
    unsafe fn tile(
        &mut self,
        a: *const u8,
        rows: usize,
        panel: *const u8,
        first: bool,
        acc: &mut [Acc; 4],
    ) {
        let (k, lda, corr) = (self.k, self.lda, &mut self.corr);
        // SAFETY: forwarded from the trait's contract; `first` tiles run before the
        // panel's other tiles, so `corr` is this panel's when `SUM` is false.
        unsafe {
            match (rows, first) {
                (4, true) => tile::<4, true>(a, lda, k, panel, acc, corr),
                (4, false) => tile::<4, false>(a, lda, k, panel, acc, corr),
                (3, true) => tile::<3, true>(a, lda, k, panel, acc, corr),
                (3, false) => tile::<3, false>(a, lda, k, panel, acc, corr),
                (2, true) => tile::<2, true>(a, lda, k, panel, acc, corr),
                (2, false) => tile::<2, false>(a, lda, k, panel, acc, corr),
                (_, true) => tile::<1, true>(a, lda, k, panel, acc, corr),
                (_, false) => tile::<1, false>(a, lda, k, panel, acc, corr),
            }
        }
    }
}

/// One `R x 16` tile over the whole K. With `SUM`, also sets `corr` to 128 x the panel's
/// column sums; either way adds `corr` to the flipped products.
///
/// # Safety
/// NEON + dotprod; rows `a + r * lda .. + k` (r < R) readable; `w` is a c4 panel of
/// `round_up(k, 4) * 16` bytes; without `SUM`, `corr` holds this panel's correction.
#[inline(always)]
unsafe fn tile<const R: usize, const SUM: bool>(
    a: *const u8,
    lda: usize,
    k: usize,
    w: *const u8,
    out: &mut [Acc; 4],
    corr: &mut Acc,
) {
    let mut c: [Acc; R] = [zero_acc(); R];
    let mut s = zero_acc();
    // SAFETY: activation loads stay inside each row (16-byte loads while kk + 16 <= k, a
    // partial copy of the `k - kk` remaining bytes after); weight loads read k-groups
    // below round_up(k, 4) / 4 of the panel; the features are the caller's.
    unsafe {
        let flip = vdupq_n_u8(0x80);
        let ones = vdupq_n_s8(1);
        let mut kk = 0;
        while kk + 16 <= k {
            let mut av = [vdupq_n_s8(0); R];
            for (r, v) in av.iter_mut().enumerate() {
                *v = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(a.add(r * lda + kk)), flip));
            }
            let wg = w.add(kk * NR);
            group::<0, R, SUM>(&mut c, &mut s, wg, &av, ones);
            group::<1, R, SUM>(&mut c, &mut s, wg, &av, ones);
            group::<2, R, SUM>(&mut c, &mut s, wg, &av, ones);
            group::<3, R, SUM>(&mut c, &mut s, wg, &av, ones);
            kk += 16;
        }
        if kk < k {
            let rem = k - kk;
            let mut av = [vdupq_n_s8(0); R];
            for (r, v) in av.iter_mut().enumerate() {
                *v = vreinterpretq_s8_u8(veorq_u8(
                    load_partial_u8x16(a.add(r * lda + kk), rem),
                    flip,
                ));
            }
            let wg = w.add(kk * NR);
            let groups = rem.div_ceil(KR);
            group::<0, R, SUM>(&mut c, &mut s, wg, &av, ones);
            if groups > 1 {
                group::<1, R, SUM>(&mut c, &mut s, wg, &av, ones);
            }
            if groups > 2 {
                group::<2, R, SUM>(&mut c, &mut s, wg, &av, ones);
            }
            if groups > 3 {
                group::<3, R, SUM>(&mut c, &mut s, wg, &av, ones);
            }
        }
        if SUM {
            for (cj, sj) in corr.iter_mut().zip(s) {
                *cj = vshlq_n_s32::<7>(sj);
            }
        }
        for (o, cr) in out.iter_mut().zip(c) {
            for j in 0..4 {
                o[j] = vaddq_s32(cr[j], corr[j]);
            }
        }
    }
}

/// k-group `G` of a 4-group block: 4 weight vectors x R rows of `sdot` by lane `G`.
///
/// # Safety
/// NEON + dotprod; the 64 bytes at `wg + G * 64` are readable.
#[inline(always)]
unsafe fn group<const G: i32, const R: usize, const SUM: bool>(
    c: &mut [Acc; R],
    s: &mut Acc,
    wg: *const u8,
    av: &[int8x16_t; R],
    ones: int8x16_t,
) {
    // SAFETY: the caller guarantees the k-group is inside the panel, and dotprod.
    unsafe {
        let base = wg.add(G as usize * NR * KR) as *const i8;
        for j in 0..4 {
            let wj = vld1q_s8(base.add(16 * j));
            for (cr, &x) in c.iter_mut().zip(av) {
                cr[j] = sdot_lane::<G>(cr[j], wj, x);
            }
            if SUM {
                s[j] = sdot(s[j], wj, ones);
            }
        }
    }
}

/// `acc[i] += sum_{t<4} w[4i + t] * a[4L + t]` (`sdot` by element).
///
/// # Safety
/// The CPU supports dotprod.
#[inline(always)]
unsafe fn sdot_lane<const L: i32>(mut acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: a pure register instruction; dotprod is the caller's guarantee.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{l}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `acc[i] += sum_{t<4} w[4i + t] * b[4i + t]` (`sdot` by vector).
///
/// # Safety
/// The CPU supports dotprod.
#[inline(always)]
unsafe fn sdot(mut acc: int32x4_t, w: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: a pure register instruction; dotprod is the caller's guarantee.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {w:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}
