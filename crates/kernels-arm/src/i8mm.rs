//! `i8mm/gemm_4x16c8`: ARMv8.6-A int8 matrix multiply (`usmmla`, u8 x s8 -> i32).
//!
//! **ISA**: NEON + `i8mm` (FEAT_I8MM: Neoverse V1/N2/V2, Cortex-A510/A710/X2 and later,
//! Apple M2+). `usmmla vd.4s, vn.16b, vm.16b` treats `vn` as a 2 x 8 u8 matrix (two rows
//! of activations, 8 k each) and `vm` as a 2 x 8 s8 matrix (two weight columns, 8 k each)
//! and accumulates their 2 x 2 product `[r0c0, r0c1, r1c0, r1c1]`: mixed signedness in
//! hardware, so the contract's u8 x i8 product needs no flip and no correction. Exact:
//! `|sum| <= 255 * 128 * 33 025 < 2^31`, accumulation wraps (never saturates).
//!
//! **Tile**: 4 rows (2 row pairs) x 16 columns (8 column pairs), k-groups of 8 (`c8`).
//!
//! **Register budget** (32 V registers): 16 accumulators (2 row pairs x 8 column pairs,
//! each a 2 x 2 block) + 8 weight vectors (one k-group: 16 columns x 8 bytes) + 4
//! interleaved activation vectors (2 row pairs x 2 k-groups) = 28; the 4 raw activation
//! loads are dead once interleaved (`trn1`/`trn2 .2d`) and reuse those registers.
//!
//! **Packed layout** (generic packer, `nr = 16`, `kr = 8`): one 16-byte load is exactly a
//! column pair, `usmmla`'s right operand, with no shuffling:
//!
//! ```text
//! panel p: columns 16p .. 16p+16, kpad = round_up(K, 8), kpad / 8 k-groups of 128 bytes
//! +---------------------------------------------------------------------------+
//! | k-group 0: [c0 k0..7 | c1 k0..7] [c2 | c3] [c4 | c5] ... [c14 | c15]       |  8 x ldr q
//! | k-group 1: [c0 k8..15| c1 k8..15] ...                                     |
//! | ...        (bytes past K and columns >= N are zero)                       |
//! +---------------------------------------------------------------------------+
//! activations, per row pair and 16 k:  r0[k0..15], r1[k0..15]  (2 x ldr q)
//!   trn1 .2d -> [r0 k0..7 | r1 k0..7]   (k-group 2g)      usmmla acc, A, W
//!   trn2 .2d -> [r0 k8..15| r1 k8..15]  (k-group 2g+1)
//! accumulator (pair p, column pair j) = [r(2p) c(2j), r(2p) c(2j+1), r(2p+1) c(2j), r(2p+1) c(2j+1)]
//!   un-interleaved for the epilogue with trn1/trn2 .2d on column pairs (j, j+1).
//! ```
//!
//! **Reads**: whole k-groups of the panels it computes (never past `kpad * 16` bytes of a
//! panel); activations in 16-byte loads while 16 bytes remain in the row, then the
//! `K % 16` tail via a zeroed 16-byte stack copy, and the second k-group of a tail block is
//! issued only when the tail reaches it: never past `k`. An odd last row is paired with a
//! zero vector (its half of the 2 x 2 results is discarded).
//!
//! **Inner loop** (per k-group, 4 x 16 tile): 16 `usmmla` = 512 MACs, against 8 `ldr q`
//! of weights (128 B) plus, per row pair, one `ldr q` per row every two k-groups and one
//! `trn1`/`trn2` (so 2 activation loads and 2 permutes per k-group): 16 MAC instructions
//! per 160 bytes loaded, 10 loads per 16 MAC instructions, 32 MACs per instruction (2x
//! `sdot`, 8x `smlal` by lane). Comparison, from the libraries' published kernel sets
//! (not measured here): XNNPACK's `qs8-gemm ... 4x16c8 ... neoni8mm` is this tile; its
//! 8x16c8 variant halves the weight loads per MAC but needs all 32 registers for
//! accumulators. MLAS's i8mm QGEMM kernels and KleidiAI's i8mm matmuls use the same
//! 2 x 2 x 8 `*mmla` block with more rows per tile (8 rows: 4 row pairs), which trades
//! weight loads for activation interleaving done at pack time; this crate packs only the
//! weight, so activations are interleaved in registers (`trn1`/`trn2`, 1 per 8 MAC
//! instructions). Release disassembly (rustc 1.95, opt-level 3), 2 k-groups per
//! iteration: 32 `usmmla`, 8 `ldp q` (weights), 4 `ldr q` + 4 `zip1`/`zip2` (activations),
//! 5 scalar = 53 instructions, no spills. With M = 1 the same code is the GEMV tile (row pair = row + zeros):
//! 8 `usmmla` per 128 weight bytes, one 16-byte weight load per instruction, the same
//! weight throughput as a `usdot` GEMV.
//!
//! `usmmla` is emitted with `asm!` (the intrinsic is unstable); the `.arch_extension`
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
pub const KR: usize = 8;
/// The kernel's name.
pub const NAME: &str = "i8mm/gemm_4x16c8";

/// Row pairs and column pairs of the tile.
const PAIRS: usize = MR / 2;
const COL_PAIRS: usize = NR / 2;
/// Live vector registers: accumulators + one k-group of weights + interleaved activations.
const LIVE_REGS: usize = PAIRS * COL_PAIRS + COL_PAIRS + 2 * PAIRS;
const _: () = assert!(LIVE_REGS == 28 && LIVE_REGS <= 32);
const _: () = assert!(NR * KR == 128 && MR & 1 == 0);
const _: () = assert!(255 * 128 * (qlinear_reference::K_LIMIT as i64) < i32::MAX as i64);

entry_points!(I8mm, ["neon", "i8mm"], gemm);

/// The descriptor of this kernel.
pub const DESC: KernelDesc = KernelDesc {
    name: NAME,
    isa: qlinear_reference::contract::Isa::I8mm,
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
/// NEON + i8mm available; `args` / `epi` satisfy the kernel contract for the `c8` layout.
#[inline(always)]
unsafe fn gemm<E: Epilogue>(args: &GemmArgs<E::Out>, epi: &E) {
    let (k, lda) = (args.k, args.a_stride);
    let panel_bytes = PackedLayout { nr: NR, kr: KR }.panel_bytes(k);
    let mut tiles = Tiles { k, lda };
    // SAFETY: forwarded contract; `Tiles` computes the rows the driver hands it.
    unsafe { drive(args, epi, MR, panel_bytes, &mut tiles) }
}

/// This kernel's [`Tile`]: K and the activation stride.
struct Tiles {
    k: usize,
    lda: usize,
}

impl Tile for Tiles {
    #[inline(always)]
    unsafe fn tile(
        &mut self,
        a: *const u8,
        rows: usize,
        panel: *const u8,
        _first: bool,
        acc: &mut [Acc; 4],
    ) {
        let (k, lda) = (self.k, self.lda);
        // SAFETY: forwarded from the trait's contract.
        unsafe {
            match rows {
                4 => tile::<4>(a, lda, k, panel, acc),
                3 => tile::<3>(a, lda, k, panel, acc),
                2 => tile::<2>(a, lda, k, panel, acc),
                _ => tile::<1>(a, lda, k, panel, acc),
            }
        }
    }
}

/// One `R x 16` tile over the whole K.
///
/// # Safety
/// NEON + i8mm; rows `a + r * lda .. + k` (r < R) readable; `w` is a c8 panel of
/// `round_up(k, 8) * 16` bytes.
#[inline(always)]
unsafe fn tile<const R: usize>(
    a: *const u8,
    lda: usize,
    k: usize,
    w: *const u8,
    out: &mut [Acc; 4],
) {
    // c[p][j]: row pair p, column pair j.
    let mut c = [[zero_acc()[0]; COL_PAIRS]; PAIRS];
    let pairs = R.div_ceil(2);
    // SAFETY: activation loads stay inside rows r < R (16-byte loads while kk + 16 <= k,
    // then a partial copy of the k - kk remaining bytes); weight loads read k-groups below
    // round_up(k, 8) / 8; i8mm is the caller's guarantee.
    unsafe {
        // Rows past R (the odd row's partner) are zeros; `len < 16` is the K tail.
        let load = |r: usize, kk: usize, len: usize| -> uint8x16_t {
            if r >= R {
                vdupq_n_u8(0)
            } else if len == 16 {
                vld1q_u8(a.add(r * lda + kk))
            } else {
                load_partial_u8x16(a.add(r * lda + kk), len)
            }
        };
        // Two k-groups from 16 bytes of each row of every row pair.
        let pair_up = |kk: usize, len: usize| {
            let mut lo = [vdupq_n_u8(0); PAIRS];
            let mut hi = [vdupq_n_u8(0); PAIRS];
            for p in 0..pairs {
                let r0 = vreinterpretq_u64_u8(load(2 * p, kk, len));
                let r1 = vreinterpretq_u64_u8(load(2 * p + 1, kk, len));
                lo[p] = vreinterpretq_u8_u64(vtrn1q_u64(r0, r1));
                hi[p] = vreinterpretq_u8_u64(vtrn2q_u64(r0, r1));
            }
            (lo, hi)
        };
        let mut kk = 0;
        // Main loop: whole 16-byte row slices, plain loads only.
        while kk + 16 <= k {
            let (lo, hi) = pair_up(kk, 16);
            let wg = w.add(kk * NR);
            group(&mut c, pairs, wg, &lo);
            group(&mut c, pairs, wg.add(NR * KR), &hi);
            kk += 16;
        }
        // K tail (1..=15 bytes): partial loads; the second k-group only if K reaches it.
        if kk < k {
            let len = k - kk;
            let (lo, hi) = pair_up(kk, len);
            let wg = w.add(kk * NR);
            group(&mut c, pairs, wg, &lo);
            if len > KR {
                group(&mut c, pairs, wg.add(NR * KR), &hi);
            }
        }
        // Un-interleave: row 2p = low halves, row 2p + 1 = high halves of column pairs.
        for p in 0..pairs {
            for q in 0..4 {
                let x = vreinterpretq_s64_s32(c[p][2 * q]);
                let y = vreinterpretq_s64_s32(c[p][2 * q + 1]);
                out[2 * p][q] = vreinterpretq_s32_s64(vtrn1q_s64(x, y));
                out[2 * p + 1][q] = vreinterpretq_s32_s64(vtrn2q_s64(x, y));
            }
        }
    }
}

/// One k-group: 8 weight column pairs x `pairs` row pairs of `usmmla`.
///
/// # Safety
/// NEON + i8mm; the 128 bytes at `wg` are readable.
#[inline(always)]
unsafe fn group(
    c: &mut [[int32x4_t; COL_PAIRS]; PAIRS],
    pairs: usize,
    wg: *const u8,
    a: &[uint8x16_t; PAIRS],
) {
    // SAFETY: the caller guarantees the k-group is inside the panel, and i8mm.
    unsafe {
        for j in 0..COL_PAIRS {
            let wj = vld1q_s8(wg.add(16 * j) as *const i8);
            for (cp, &ap) in c.iter_mut().zip(a).take(pairs) {
                cp[j] = usmmla(cp[j], ap, wj);
            }
        }
    }
}

/// `acc += A (2x8 u8, rows in the two halves) * W^T (2x8 s8, columns in the two halves)`.
///
/// # Safety
/// The CPU supports i8mm.
#[inline(always)]
unsafe fn usmmla(mut acc: int32x4_t, a: uint8x16_t, w: int8x16_t) -> int32x4_t {
    // SAFETY: a pure register instruction; i8mm is the caller's guarantee.
    unsafe {
        asm!(
            ".arch_extension i8mm",
            "usmmla {acc:v}.4s, {a:v}.16b, {w:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            w = in(vreg) w,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}
