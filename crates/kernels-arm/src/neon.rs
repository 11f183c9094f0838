//! `neon/gemm_4x16c1`: plain AArch64 Advanced SIMD, exact widening multiply-accumulate.
//!
//! **ISA**: ARMv8.0-A NEON only (every aarch64 CPU). u8 activations are zero-extended and
//! i8 weights sign-extended to i16 (`uxtl` / `sxtl`); each product `|a * w| <= 255 * 128`
//! fits i16 operands and is accumulated straight into i32 lanes by `smlal`/`smlal2` *by
//! element*, so nothing is ever saturated or rounded: exact for K up to the contract's
//! 33 025 (`255 * 128 * 33 025 < 2^31`). (Pairwise tricks such as `smull` + `sadalp` on
//! 8-bit products or `sqdmlal` are not used: u8 x i8 has no 8-bit widening multiply, and
//! an i16 pair sum `2 * 255 * 128` overflows i16.)
//!
//! **Tile**: 4 rows x 16 columns, K step 1 (`c1`), K blocked by 8 for the activations.
//!
//! **Register budget** (32 x 128-bit V registers): 16 accumulators (4 rows x 4 quads of
//! i32) + 2 widened weight vectors (16 x i16) + 4 widened activation vectors (8 k x i16,
//! one per row) = 22, leaving 10 for the weight load / address temporaries.
//!
//! **Packed layout** (generic packer, `nr = 16`, `kr = 1`): a panel is `K x 16` bytes,
//! k-major, one 16-byte weight row per k:
//!
//! ```text
//! panel p (columns 16p .. 16p+16), K rows of 16 bytes
//! +-----------------------------------------------+
//! | k=0   : w[c0,0]  w[c1,0]  ...  w[c15,0]       |  16 B  -> one ldr q, sxtl + sxtl2
//! | k=1   : w[c0,1]  w[c1,1]  ...  w[c15,1]       |  16 B
//! | ...                                           |
//! | k=K-1 : w[c0,K-1] ...          w[c15,K-1]     |  (columns >= N are zero)
//! +-----------------------------------------------+
//! ```
//!
//! **Reads**: exactly the `K * 16` bytes of each panel it computes (no K padding with
//! `kr = 1`); activations in 8-byte `ldr d` blocks while 8 bytes remain in the row, then
//! one byte at a time (`K % 8` tail, `smlal` by a broadcast scalar): never past `k`.
//!
//! **Inner loop** (per k, 4 x 16 tile): 1 `ldr q` (16 weight bytes), 2 `sxtl`, 16
//! `smlal`/`smlal2` by lane = 64 MACs; per 8 k also 4 `ldr d` + 4 `uxtl` of activations.
//! Per 8 k: 128 MAC instructions, 12 loads (8 weight + 4 activation, 160 bytes), 20
//! widenings: 0.8 MAC instructions per byte loaded, one load per ~10.7 MAC instructions,
//! 4 i32 MACs per instruction, 3.2 MACs per byte (the 4 x 16 tile's `4*16/(4+16)`).
//! Release disassembly (rustc 1.95, opt-level 3) of the 4-row loop, 8 k per iteration:
//! 128 `smlal`/`smlal2`, 8 + 8 `sxtl`/`sxtl2`, 4 `ldp q` + 4 `ldr d`, 4 `uxtl`, 5 scalar:
//! 161 instructions, no spills.
//! This is XNNPACK's plain-NEON tile for 8-bit GEMM (`qs8/qu8-gemm 4x16-minmax-neon-mlal-
//! lane`, same c1 layout and lane scheme). ruy's pre-dotprod 8-bit kernel reaches 8 MACs
//! per instruction with `smull`+`sadalp` on 8-bit products, but only by requiring
//! weights in [-127, 127] (a pair sum must fit i16), which the contract's -128 forbids;
//! MLAS's U8X8 NEON kernel uses `umlal` on u8 x u8 (weights shifted by 128) at the same 4
//! MACs per instruction. (Comparisons are from the libraries' published kernel sets, not
//! measured here.)
//! With M = 1 the same code runs as a 1 x 16 GEMV tile: 1 load, 2 `sxtl`, 4 `smlal` per k,
//! bound by the weight stream as any GEMV.

use core::arch::aarch64::*;

use qlinear_reference::contract::{GemmArgs, KernelDesc, MPreference, PackedLayout};

use crate::common::{drive, zero_acc, Acc, Epilogue, Tile, NR};

/// Rows of the register tile.
pub const MR: usize = 4;
/// Consecutive K values per column in a k-group.
pub const KR: usize = 1;
/// The kernel's name.
pub const NAME: &str = "neon/gemm_4x16c1";

/// Vector registers held live by the inner loop: accumulators + widened weights + widened
/// activations.
const LIVE_REGS: usize = MR * NR / 4 + NR / 8 + MR;
const _: () = assert!(LIVE_REGS == 22 && LIVE_REGS <= 32);
const _: () = assert!(MR <= 4 && NR == 16);
// Exactness: the largest product magnitude fits the i16 operands of smlal, and the
// largest sum over the contract's K limit fits i32.
const _: () = assert!(
    255 * 128 <= i16::MAX as i64
        && 255 * 128 * (qlinear_reference::K_LIMIT as i64) < i32::MAX as i64
);

entry_points!(Neon, ["neon"], gemm);

/// The descriptor of this kernel.
pub const DESC: KernelDesc = KernelDesc {
    name: NAME,
    isa: qlinear_reference::contract::Isa::Neon,
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
/// NEON available; `args` / `epi` satisfy [`qlinear_reference::contract::GemmU8Fn`] for the
/// `c1` layout above.
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

/// One `R x 16` tile over the whole K: `acc[r] = sum_k a[r, k] * w[panel, k]`.
///
/// # Safety
/// NEON; rows `a + r * lda .. + k` (r < R) readable; `w` is a `k x 16` c1 panel.
#[inline(always)]
unsafe fn tile<const R: usize>(
    a: *const u8,
    lda: usize,
    k: usize,
    w: *const u8,
    out: &mut [Acc; 4],
) {
    let mut c: [Acc; R] = [zero_acc(); R];
    let mut kk = 0;
    // SAFETY: activation loads stay inside the rows (kk + 8 <= k, then single bytes with
    // kk < k); weight loads read row kk < k of the panel, 16 bytes each.
    unsafe {
        while kk + 8 <= k {
            let mut av = [vdupq_n_s16(0); R];
            for (r, v) in av.iter_mut().enumerate() {
                *v = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(a.add(r * lda + kk))));
            }
            let wk = w.add(kk * NR);
            step::<0, R>(&mut c, wk, &av);
            step::<1, R>(&mut c, wk, &av);
            step::<2, R>(&mut c, wk, &av);
            step::<3, R>(&mut c, wk, &av);
            step::<4, R>(&mut c, wk, &av);
            step::<5, R>(&mut c, wk, &av);
            step::<6, R>(&mut c, wk, &av);
            step::<7, R>(&mut c, wk, &av);
            kk += 8;
        }
        while kk < k {
            let (w0, w1) = widen(w.add(kk * NR));
            for (r, cr) in c.iter_mut().enumerate() {
                let x = *a.add(r * lda + kk) as i16;
                cr[0] = vmlal_n_s16(cr[0], vget_low_s16(w0), x);
                cr[1] = vmlal_high_n_s16(cr[1], w0, x);
                cr[2] = vmlal_n_s16(cr[2], vget_low_s16(w1), x);
                cr[3] = vmlal_high_n_s16(cr[3], w1, x);
            }
            kk += 1;
        }
    }
    out[..R].copy_from_slice(&c);
}

/// Loads one 16-byte weight row and sign-extends it to two `int16x8_t`.
///
/// # Safety
/// NEON; 16 readable bytes at `w`.
#[inline(always)]
unsafe fn widen(w: *const u8) -> (int16x8_t, int16x8_t) {
    // SAFETY: the caller guarantees 16 readable bytes.
    unsafe {
        let b = vld1q_s8(w as *const i8);
        (vmovl_s8(vget_low_s8(b)), vmovl_high_s8(b))
    }
}

/// The K step `L` of an 8-k block: 16 columns x R rows, activation lane `L`.
///
/// # Safety
/// NEON; the weight row `wk + L * 16 .. + 16` is readable.
#[inline(always)]
unsafe fn step<const L: i32, const R: usize>(c: &mut [Acc; R], wk: *const u8, av: &[int16x8_t; R]) {
    // SAFETY: the caller guarantees weight row L of the block is readable.
    unsafe {
        let (w0, w1) = widen(wk.add(L as usize * NR));
        for (cr, &x) in c.iter_mut().zip(av) {
            cr[0] = vmlal_laneq_s16::<L>(cr[0], vget_low_s16(w0), x);
            cr[1] = vmlal_high_laneq_s16::<L>(cr[1], w0, x);
            cr[2] = vmlal_laneq_s16::<L>(cr[2], vget_low_s16(w1), x);
            cr[3] = vmlal_high_laneq_s16::<L>(cr[3], w1, x);
        }
    }
}
