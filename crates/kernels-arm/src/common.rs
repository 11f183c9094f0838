//! What the three aarch64 kernels share: the panel width, the panel/row-tile driver and
//! the vectorized epilogues.
//!
//! Every kernel of this crate produces, for one row and one panel, sixteen exact i32
//! accumulators `acc[n] = sum_k a[k] * w[n,k]` in four `int32x4_t` ([`Acc`]). From there
//! the work is identical, so it lives here once:
//!
//! * [`drive`] walks row blocks of about [`ACT_BLOCK_BYTES`] of activations (outer, so a
//!   block stays in L2 while the weight panels stream past it once), the column panels
//!   of `[n_begin, n_end)` (middle) and row tiles of at most `MR` (inner), hands each tile
//!   to the kernel's [`Tile`] and each finished row to the epilogue. The first tile of
//!   every panel in a block is flagged so a kernel can compute per-panel data (the
//!   dotprod kernel's column sums) on the way.
//! * [`Epilogue`] is implemented for [`StaticEpilogue`] (u8 out) and [`DynamicEpilogue`]
//!   (f32 out) with NEON code that reproduces their scalar `apply` bit for bit:
//!
//! ```text
//! raw = acc + col_offset - row_zp * row_sum          add / mul / sub  (wrapping, like apply)
//! static:  xf = fma(bias_a, bias_b, i2f(raw))        scvtf, fmla (fused, as mul_add)
//!          y  = xf * mult                            fmul
//!          q  = sat_add(cvt(y), zp_y)                fcvtns (ties-even, saturating,
//!                                                    NaN -> 0, exactly Rust's `as`), sqadd
//!          out = clamp(q, lo, 255)                   smax, smin, xtn, sqxtun
//! dynamic: fused:   fma(i2f(raw), mult, bias)        fmla
//!          unfused: (mult * i2f(raw)) + bias         fmul, fadd (never contracted by rustc)
//!          relu:    x > 0 ? x : 0                    fcmgt + bsl (NaN, -0.0 -> +0.0)
//! ```
//!
//! Per-row dynamic mode (an epilogue from `DynamicEpilogue::new_per_row`, with the row's
//! `RowQParams` from `GemmArgs::row_qparams`) adds `raw -= zp_m * col_sum` (mul, sub)
//! and forms `mult = s_m * weight_scale` (fmul) per row; the epilogue picks the mode once
//! per row, so the per-tensor path is the same code as before.
//!
//! `sat_add` is exact here: the scalar code adds in i64 and clamps into `[lo, 255]`, a
//! sub-range of i32, so saturating at the i32 limits first changes no output. A null
//! `row_sums` pointer is treated as `row_sum = 0`, which makes the row term vanish exactly
//! as skipping it would.
//!
//! The column arrays of both epilogues are padded to whole panels (the contract), so an
//! epilogue always reads sixteen entries; it *writes* only the `nc` valid columns.

use core::arch::aarch64::*;

use qlinear_reference::contract::{DynamicEpilogue, GemmArgs, RowQParams, StaticEpilogue};

/// Columns per packed panel, shared by every kernel of this crate.
pub(crate) const NR: usize = 16;

/// Sixteen i32 accumulators of one row: columns `4q..4q+4` in `acc[q]`.
pub(crate) type Acc = [int32x4_t; 4];

/// A zeroed accumulator row.
#[inline(always)]
pub(crate) fn zero_acc() -> Acc {
    // SAFETY: `vdupq_n_s32` only needs NEON, which is baseline on aarch64.
    unsafe { [vdupq_n_s32(0); 4] }
}

/// A vectorized epilogue: turns one row's accumulators into output elements.
pub(crate) trait Epilogue {
    /// Output element type.
    type Out;

    /// Applies the epilogue to columns `n0..n0 + nc` of one row and stores them at
    /// `out_row + n0 ..`. `row_q` is the row's input qparams in per-row dynamic mode,
    /// else `None`.
    ///
    /// # Safety
    /// NEON is available; the epilogue's column arrays hold at least `n0 + 16` entries;
    /// `out_row + n0 .. out_row + n0 + nc` is valid for writes; `nc <= 16`.
    unsafe fn store_row(
        &self,
        acc: &Acc,
        row_sum: i32,
        row_q: Option<RowQParams>,
        n0: usize,
        nc: usize,
        out_row: *mut Self::Out,
    );
}

/// `acc + col_offset - row_zp * row_sum`, wrapping, for columns `n..n+4`.
///
/// # Safety
/// NEON; `col_offset` and `row_zp` hold at least `n + 4` entries.
#[inline(always)]
unsafe fn raw4(
    acc: int32x4_t,
    col_offset: &[i32],
    row_zp: &[i32],
    row_sum: i32,
    n: usize,
) -> int32x4_t {
    debug_assert!(col_offset.len() >= n + 4 && row_zp.len() >= n + 4);
    // SAFETY: the caller guarantees four readable entries from `n` in both arrays.
    unsafe {
        let off = vld1q_s32(col_offset.as_ptr().add(n));
        let zp = vld1q_s32(row_zp.as_ptr().add(n));
        vsubq_s32(vaddq_s32(acc, off), vmulq_n_s32(zp, row_sum))
    }
}

impl Epilogue for StaticEpilogue {
    type Out = u8;

    #[inline(always)]
    unsafe fn store_row(
        &self,
        acc: &Acc,
        row_sum: i32,
        _row_q: Option<RowQParams>,
        n0: usize,
        nc: usize,
        out_row: *mut u8,
    ) {
        debug_assert!(nc <= 16 && self.mult.len() >= n0 + 16);
        // SAFETY: the caller guarantees 16 readable column entries from `n0` (arrays are
        // padded to whole panels) and `nc` writable bytes at `out_row + n0`.
        unsafe {
            let zp_y = vdupq_n_s32(self.zp_y);
            let lo = vdupq_n_s32(self.lo);
            let hi = vdupq_n_s32(255);
            let mut q = [vdupq_n_s32(0); 4];
            for (j, qj) in q.iter_mut().enumerate() {
                let n = n0 + 4 * j;
                let raw = raw4(acc[j], &self.col_offset, &self.row_zp, row_sum, n);
                let ba = vld1q_f32(self.bias_a.as_ptr().add(n));
                let bb = vld1q_f32(self.bias_b.as_ptr().add(n));
                let mult = vld1q_f32(self.mult.as_ptr().add(n));
                // fma(bias_a, bias_b, i2f(raw)): vfmaq_f32(x, a, b) = x + a * b, fused.
                let xf = vfmaq_f32(vcvtq_f32_s32(raw), ba, bb);
                let y = vmulq_f32(xf, mult);
                let c = vqaddq_s32(vcvtnq_s32_f32(y), zp_y);
                *qj = vminq_s32(vmaxq_s32(c, lo), hi);
            }
            // Every lane is in [lo, 255] with lo = 0 or zp_y in [0, 255]: the narrowing
            // below is exact.
            let h0 = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
            let h1 = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
            let bytes = vcombine_u8(vqmovun_s16(h0), vqmovun_s16(h1));
            let dst = out_row.add(n0);
            if nc == 16 {
                vst1q_u8(dst, bytes);
            } else {
                let mut tmp = [0u8; 16];
                vst1q_u8(tmp.as_mut_ptr(), bytes);
                core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, nc);
            }
        }
    }
}

impl Epilogue for DynamicEpilogue {
    type Out = f32;

    #[inline(always)]
    unsafe fn store_row(
        &self,
        acc: &Acc,
        row_sum: i32,
        row_q: Option<RowQParams>,
        n0: usize,
        nc: usize,
        out_row: *mut f32,
    ) {
        debug_assert!(nc <= 16 && self.mult.len() >= n0 + 16);
        // The mode is chosen once per row: the per-tensor arm is the old code.
        match row_q {
            // SAFETY: as for the static epilogue, 16 readable entries from `n0` in every
            // column array and `nc` writable floats at `out_row + n0`.
            None => unsafe {
                dynamic_row(self, acc, row_sum, n0, nc, out_row, |raw, n| {
                    (raw, vld1q_f32(self.mult.as_ptr().add(n)))
                })
            },
            // SAFETY: as above; in per-row mode `col_sum` and `weight_scale` are padded to
            // whole panels too.
            Some(q) => unsafe {
                debug_assert!(self.col_sum.len() >= n0 + 16 && self.weight_scale.len() >= n0 + 16);
                let scale = vdupq_n_f32(q.scale);
                dynamic_row(self, acc, row_sum, n0, nc, out_row, |raw, n| {
                    // raw -= zp_m * col_sum; mult = f(s_m * weight_scale)
                    let cs = vld1q_s32(self.col_sum.as_ptr().add(n));
                    let ws = vld1q_f32(self.weight_scale.as_ptr().add(n));
                    (
                        vsubq_s32(raw, vmulq_n_s32(cs, q.zero_point)),
                        vmulq_f32(scale, ws),
                    )
                })
            },
        }
    }
}

/// The dynamic epilogue of one row; `row_terms(raw, n)` gives the final `raw` and the
/// multiplier of columns `n..n+4` (per-tensor: `mult`; per-row: the row's terms).
///
/// # Safety
/// As for [`Epilogue::store_row`]; `row_terms` reads only inside the padded arrays.
#[inline(always)]
unsafe fn dynamic_row(
    e: &DynamicEpilogue,
    acc: &Acc,
    row_sum: i32,
    n0: usize,
    nc: usize,
    out_row: *mut f32,
    row_terms: impl Fn(int32x4_t, usize) -> (int32x4_t, float32x4_t),
) {
    // SAFETY: the caller guarantees 16 readable column entries from `n0`, `nc` writable
    // floats at `out_row + n0`.
    unsafe {
        let zero = vdupq_n_f32(0.0);
        for (j, &acc_j) in acc.iter().enumerate() {
            // Groups past `nc` are skipped: `out_row + n` for them may point beyond
            // the end of the output buffer (UB for `ptr::add`).
            if 4 * j >= nc {
                break;
            }
            let n = n0 + 4 * j;
            let raw = raw4(acc_j, &e.col_offset, &e.row_zp, row_sum, n);
            let (raw, mult) = row_terms(raw, n);
            let xf = vcvtq_f32_s32(raw);
            let bias = vld1q_f32(e.bias.as_ptr().add(n));
            let mut v = if e.fused_bias {
                // xf.mul_add(mult, bias) = bias + xf * mult, fused.
                vfmaq_f32(bias, xf, mult)
            } else {
                vaddq_f32(vmulq_f32(mult, xf), bias)
            };
            if e.relu {
                v = vbslq_f32(vcgtq_f32(v, zero), v, zero);
            }
            let dst = out_row.add(n);
            if 4 * j + 4 <= nc {
                vst1q_f32(dst, v);
            } else {
                let mut tmp = [0f32; 4];
                vst1q_f32(tmp.as_mut_ptr(), v);
                core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, nc - 4 * j);
            }
        }
    }
}

/// A kernel's register tile: computes up to `MR` rows of one 16-column panel over the
/// whole K. Implemented by a small per-kernel struct (K, strides, per-panel state) whose
/// `tile` is `#[inline(always)]`, so the whole loop nest is inlined into the
/// `#[target_feature]` entry point (closures cannot be marked `inline(always)` on stable).
pub(crate) trait Tile {
    /// Fills `acc[..rows]` with the exact products of activation rows `a`, `a + a_stride`,
    /// ... against `panel`. `first` is true for the first row tile of each panel (the
    /// driver visits it before the panel's other tiles).
    ///
    /// # Safety
    /// The kernel's ISA is available; `rows <= MR` rows of `k` bytes are readable at `a`
    /// with the kernel's stride; `panel` is one whole panel of the kernel's layout.
    unsafe fn tile(
        &mut self,
        a: *const u8,
        rows: usize,
        panel: *const u8,
        first: bool,
        acc: &mut [Acc; 4],
    );
}

/// Activation bytes one row block may span (rows x K): small enough to stay in a typical
/// aarch64 L2 (256 KiB - 1 MiB per core) next to the weight panel being streamed.
pub(crate) const ACT_BLOCK_BYTES: usize = 192 * 1024;

/// Rows per row block for in_features `k`: a multiple of `mr`, at least `mr`.
#[inline(always)]
pub(crate) fn block_rows(k: usize, mr: usize) -> usize {
    (ACT_BLOCK_BYTES / k.max(1) / mr).max(1) * mr
}

/// The loop nest shared by all kernels:
///
/// ```text
/// for each row block (block_rows(k) rows, ~ACT_BLOCK_BYTES of activations: stays in L2)
///   for each panel of NR columns in [n_begin, n_end)       (weights stream once per block)
///     for each row tile of <= mr rows in the block          (first tile flagged)
///       kernel.tile -> 16 exact i32 per row -> epilogue -> output row
/// ```
///
/// # Safety
/// `args` and `epi` satisfy the contract of [`qlinear_reference::contract::GemmU8Fn`] for a
/// packing with `panel_bytes` bytes per panel; the ISA of `kernel` is available.
#[inline(always)]
pub(crate) unsafe fn drive<E: Epilogue, K: Tile>(
    args: &GemmArgs<E::Out>,
    epi: &E,
    mr: usize,
    panel_bytes: usize,
    kernel: &mut K,
) {
    debug_assert!(mr <= 4 && args.n_begin / NR * NR == args.n_begin);
    let (m, n_end) = (args.m, args.n_end);
    let mb = block_rows(args.k, mr);
    let mut i0 = 0;
    while i0 < m {
        let i1 = m.min(i0 + mb);
        let mut n0 = args.n_begin;
        while n0 < n_end {
            let nc = NR.min(n_end - n0);
            let mut i = i0;
            while i < i1 {
                let rows = mr.min(i1 - i);
                let mut acc = [zero_acc(); 4];
                // SAFETY: panel n0 / NR exists (the packing holds at least n_end > n0
                // columns); rows i .. i + rows <= m are valid rows of `a`; the ISA is the
                // caller's.
                unsafe {
                    let panel = args.packed.add((n0 / NR) * panel_bytes);
                    let a_rows = args.a.add(i * args.a_stride);
                    kernel.tile(a_rows, rows, panel, i == i0, &mut acc);
                }
                for (r, acc_r) in acc.iter().enumerate().take(rows) {
                    // SAFETY: row i + r < m: `row_sums` and `row_qparams` (when non-null)
                    // have m entries and the output row is valid for columns
                    // [n_begin, n_end) ⊇ [n0, n0 + nc);
                    // the epilogue arrays are padded to whole panels (n0 + 16 entries).
                    unsafe {
                        let row_sum = if args.row_sums.is_null() {
                            0
                        } else {
                            *args.row_sums.add(i + r)
                        };
                        let row_q = if args.row_qparams.is_null() {
                            None
                        } else {
                            Some(*args.row_qparams.add(i + r))
                        };
                        let out_row = args.out.add((i + r) * args.out_stride);
                        epi.store_row(acc_r, row_sum, row_q, n0, nc, out_row);
                    }
                }
                i += rows;
            }
            n0 += NR;
        }
        i0 = i1;
    }
}

/// Loads the `len < 16` bytes at `src` into the low lanes of a vector, zero filling the rest
/// (never reading past `src + len`).
///
/// # Safety
/// NEON; `src .. src + len` is readable; `len <= 16`.
#[inline(always)]
pub(crate) unsafe fn load_partial_u8x16(src: *const u8, len: usize) -> uint8x16_t {
    debug_assert!(len <= 16);
    let mut tmp = [0u8; 16];
    // SAFETY: the caller guarantees `len` readable bytes; `tmp` has 16 >= len.
    unsafe {
        core::ptr::copy_nonoverlapping(src, tmp.as_mut_ptr(), len);
        vld1q_u8(tmp.as_ptr())
    }
}
