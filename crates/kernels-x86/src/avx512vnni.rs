//! # `avx512vnni/gemm_8x32c4`: AVX-512 VNNI, 8 x 32 register tile
//!
//! `vpdpbusd zmm` multiplies 64 u8 activations by 64 i8 weights and adds each group of
//! four products into one of 16 i32 lanes, exactly (no intermediate saturation: that is
//! the `vpdpbusds` variant, which we never use). One zmm of packed weights is one k-group
//! (4 values of K) of 16 output columns.
//!
//! ## Register budget (32 zmm)
//!
//! ```text
//! accumulators  8 rows x 2 zmm (32 columns)          16
//! weights       4 zmm (two k-groups per iteration)    4
//! activation    1-2 zmm (4 bytes broadcast)           2   -> 22 of 32
//! epilogue      10 zmm of per-column parameters, loaded once per tile after the K loop
//! ```
//!
//! Per k-group: 2 weight loads + 8 broadcast loads (`vpbroadcastd zmm, m32`, a pure
//! load) feed 16 `vpdpbusd` (1024 MACs), 0.6 loads per `vpdpbusd`. Cores with two
//! 512-bit VNNI pipes (the Xeon this was tuned on, Zen 4/5) retire 2 `vpdpbusd` per
//! cycle, so one iteration (two k-groups, 32 `vpdpbusd`) takes 16 cycles and leaves the
//! load ports half idle; 16 independent accumulators cover the instruction's latency at
//! that rate. The epilogue costs about 11 vector instructions per 16 outputs, i.e. ~6 %
//! of a tile's vector work at K = 768 and ~1.5 % at K = 3072.
//!
//! A one-row tile (GEMV) takes a separate path that keeps 4 k-groups in flight (8
//! accumulators), since a single row would otherwise be bound by the `vpdpbusd`
//! dependency chain; it is bound by the weight stream instead. This kernel uses it for
//! the one-row tails of its row blocks; the M = 1 calls themselves go to the kernel
//! `avx512vnni/gemv_1x32c4` ([`crate::avx512vnni_gemv`]), which runs that path on every
//! row of the same packed bytes (`gemv_u8`, `gemv_f32`). Their preferences
//! (`m_pref`) split M between them: 1 for the GEMV kernel, 2 and up for this one. The
//! first tile of each panel in a row block prefetches the next panel into L2 (see the
//! `blocking` module).
//!
//! ## Packed layout (`nr = 32`, `kr = 4`)
//!
//! ```text
//! panel p (columns 32p .. 32p+31), kpad = round_up(K, 4):
//!   byte 0    : [c0 k0..k3][c1 k0..k3] ... [c15 k0..k3] | [c16 k0..k3] ... [c31 k0..k3]
//!               \______________ zmm 0 (64 B) __________/   \________ zmm 1 (64 B) ____/
//!   byte 128  : same for k4..k7
//!   ...         kpad / 4 k-groups; panel size kpad * 32 bytes; padding is zero
//! ```
//!
//! ## Reads and writes
//!
//! Activations: exactly the `k` bytes of each row (the last `k % 4` bytes are read one by
//! one into a zero-padded lane). Weights: whole k-groups of whole panels (inside the
//! packing). Epilogue arrays: whole panels (padded by the API). Outputs: only columns
//! `[n_begin, n_end)`, through AVX-512 store masks.

use core::arch::x86_64::*;

use qlinear_reference::contract::{DynamicEpilogue, GemmArgs, MPreference, StaticEpilogue};

use crate::blocking::{load_tail_u32, Tile, Tiles};
use crate::epilogue512::{
    column_masks, store_row, DynamicOut, DynamicPerRowOut, Output, StaticOut, VECS,
};
use crate::isa::kernel_descriptor;

/// Rows of the register tile.
pub const MR: usize = 8;
/// Columns of the register tile (two zmm of 16 i32 lanes).
pub const NR: usize = 32;
/// K values per column in a k-group (one `vpdpbusd` lane).
pub const KR: usize = 4;
const K_GROUP_BYTES: usize = NR * KR;
const _: () = assert!(VECS * 16 == NR, "the epilogue writes NR = 2 zmm of columns");
const _: () = assert!(MR * VECS + VECS < 32, "tile must fit the 32 zmm registers");
const _: () = assert!(
    K_GROUP_BYTES == VECS * 64,
    "one k-group is VECS full zmm loads"
);

kernel_descriptor! {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    features: crate::isa::AVX512VNNI,
    name: "avx512vnni/gemm_8x32c4",
    isa: Avx512Vnni,
    mr: MR,
    nr: NR,
    kr: KR,
    // M = 1 goes to `avx512vnni/gemv_1x32c4`, every larger M here, except that on an
    // AMX CPU (same packing) `amx/gemm_32x32c4` ranks first from M = 16.
    m_pref: MPreference {
        m_min: 2,
        m_max: usize::MAX,
        rank: 1,
    },
}

/// Static entry point (see [`qlinear_reference::contract::GemmU8Fn`]).
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI; `args`, the packing and `epi` satisfy the
/// contract of [`qlinear_reference::contract::GemmU8Fn`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemm_u8(args: &GemmArgs<u8>, epi: &StaticEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    unsafe { drive(args, &StaticOut::new(epi)) }
}

/// Dynamic entry point (see [`qlinear_reference::contract::GemmF32Fn`]).
///
/// # Safety
/// As for [`gemm_u8`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemm_f32(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    // The mode is chosen once per call, so the per-tensor path is exactly as before.
    unsafe {
        if epi.is_per_row() {
            gemm_f32_per_row(args, epi)
        } else {
            gemm_f32_per_tensor(args, epi)
        }
    }
}

/// The per-tensor dynamic loop nest. Kept out of line, like the per-row one, so each
/// is compiled (and inlined into) on its own exactly as the single dynamic loop nest
/// was before the per-row mode existed.
///
/// # Safety
/// As for [`gemm_f32`].
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemm_f32_per_tensor(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    unsafe { drive(args, &DynamicOut(epi)) }
}

/// The per-row dynamic loop nest (an epilogue from [`DynamicEpilogue::new_per_row`]).
///
/// # Safety
/// As for [`gemm_f32`], with `args.row_qparams` holding `m` entries.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemm_f32_per_row(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    unsafe { drive(args, &DynamicPerRowOut(epi)) }
}

/// Static entry point of the GEMV kernel `avx512vnni/gemv_1x32c4`: the one-row tile on
/// every row (see [`crate::avx512vnni_gemv`]).
///
/// # Safety
/// As for [`gemm_u8`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) unsafe fn gemv_u8(args: &GemmArgs<u8>, epi: &StaticEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    unsafe { drive_rows(args, &StaticOut::new(epi)) }
}

/// Dynamic entry point of the GEMV kernel (see [`gemv_u8`]).
///
/// # Safety
/// As for [`gemm_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) unsafe fn gemv_f32(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    unsafe {
        if epi.is_per_row() {
            gemv_f32_per_row(args, epi)
        } else {
            gemv_f32_per_tensor(args, epi)
        }
    }
}

/// The GEMV kernel's per-tensor dynamic loop nest (out of line, as [`gemm_f32_per_tensor`]).
///
/// # Safety
/// As for [`gemm_f32`].
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemv_f32_per_tensor(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    unsafe { drive_rows(args, &DynamicOut(epi)) }
}

/// The GEMV kernel's per-row dynamic loop nest.
///
/// # Safety
/// As for [`gemm_f32`], with `args.row_qparams` holding `m` entries.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemv_f32_per_row(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    unsafe { drive_rows(args, &DynamicPerRowOut(epi)) }
}

/// A one-row result in an `R`-row array (the GEMV path's result for `R = 1`).
#[inline(always)]
fn widen<const R: usize>(one: [[__m512i; VECS]; 1]) -> [[__m512i; VECS]; R] {
    // SAFETY: an all-zero bit pattern is a valid __m512i.
    let mut acc = [[unsafe { core::mem::zeroed::<__m512i>() }; VECS]; R];
    acc[0] = one[0];
    acc
}

/// The register tile: `R` rows x 32 columns over the whole of K. With `PREFETCH`, the
/// panel at `next_panel` is prefetched towards L2 (two cache lines per k-group).
///
/// # Safety
/// AVX-512 VNNI enabled; rows `a + r * a_stride` hold `k` readable bytes for `r < R`;
/// `panel` points at a full packed panel for this `k` (and `next_panel` too when
/// `PREFETCH`; prefetches never fault, but the address must be computable).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn accumulate<const R: usize, const PREFETCH: bool>(
    a: *const u8,
    a_stride: usize,
    k: usize,
    panel: *const u8,
    next_panel: *const u8,
) -> [[__m512i; VECS]; R] {
    // SAFETY: all reads stay inside the rows (first `k` bytes) and the panel.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); VECS]; R];
        let groups = k / KR;
        let mut b = panel;
        let rows: [*const u8; R] = core::array::from_fn(|r| a.add(r * a_stride));
        // Two k-groups per iteration: address arithmetic and loop control amortized over
        // 2 * R * VECS `vpdpbusd`.
        let mut g = 0;
        while g + 2 <= groups {
            if PREFETCH {
                let p = next_panel.add(g * K_GROUP_BYTES);
                for line in 0..2 * K_GROUP_BYTES / 64 {
                    _mm_prefetch::<_MM_HINT_T1>(p.add(64 * line).cast());
                }
            }
            let w = [
                _mm512_loadu_si512(b.cast()),
                _mm512_loadu_si512(b.add(64).cast()),
                _mm512_loadu_si512(b.add(128).cast()),
                _mm512_loadu_si512(b.add(192).cast()),
            ];
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                let x = _mm512_set1_epi32(row.add(g * KR).cast::<i32>().read_unaligned());
                acc[0] = _mm512_dpbusd_epi32(acc[0], x, w[0]);
                acc[1] = _mm512_dpbusd_epi32(acc[1], x, w[1]);
            }
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                let x = _mm512_set1_epi32(row.add(g * KR + KR).cast::<i32>().read_unaligned());
                acc[0] = _mm512_dpbusd_epi32(acc[0], x, w[2]);
                acc[1] = _mm512_dpbusd_epi32(acc[1], x, w[3]);
            }
            b = b.add(2 * K_GROUP_BYTES);
            g += 2;
        }
        if g < groups {
            let w0 = _mm512_loadu_si512(b.cast());
            let w1 = _mm512_loadu_si512(b.add(64).cast());
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                let x = _mm512_set1_epi32(row.add(g * KR).cast::<i32>().read_unaligned());
                acc[0] = _mm512_dpbusd_epi32(acc[0], x, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], x, w1);
            }
            b = b.add(K_GROUP_BYTES);
        }
        let tail = k % KR;
        if tail != 0 {
            let w0 = _mm512_loadu_si512(b.cast());
            let w1 = _mm512_loadu_si512(b.add(64).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(load_tail_u32(a.add(r * a_stride + groups * KR), tail));
                acc[0] = _mm512_dpbusd_epi32(acc[0], x, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], x, w1);
            }
        }
        acc
    }
}

/// One row (GEMV): four k-groups in flight on separate accumulators, summed at the end,
/// so the loop is bound by loads (the weight stream), not by `vpdpbusd` latency.
///
/// # Safety
/// As for [`accumulate`] with `R = 1`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn accumulate_row<const PREFETCH: bool>(
    a: *const u8,
    k: usize,
    panel: *const u8,
    next_panel: *const u8,
) -> [[__m512i; VECS]; 1] {
    const UNROLL: usize = 4;
    // SAFETY: reads stay inside the row's `k` bytes and the panel.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); VECS]; UNROLL];
        let groups = k / KR;
        let mut b = panel;
        let mut g = 0;
        while g + UNROLL <= groups {
            if PREFETCH {
                let p = next_panel.add(g * K_GROUP_BYTES);
                for line in 0..UNROLL * K_GROUP_BYTES / 64 {
                    _mm_prefetch::<_MM_HINT_T1>(p.add(64 * line).cast());
                }
            }
            for (u, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(a.add((g + u) * KR).cast::<i32>().read_unaligned());
                let wb = b.add(u * K_GROUP_BYTES);
                acc[0] = _mm512_dpbusd_epi32(acc[0], x, _mm512_loadu_si512(wb.cast()));
                acc[1] = _mm512_dpbusd_epi32(acc[1], x, _mm512_loadu_si512(wb.add(64).cast()));
            }
            b = b.add(UNROLL * K_GROUP_BYTES);
            g += UNROLL;
        }
        while g < groups {
            let x = _mm512_set1_epi32(a.add(g * KR).cast::<i32>().read_unaligned());
            acc[0][0] = _mm512_dpbusd_epi32(acc[0][0], x, _mm512_loadu_si512(b.cast()));
            acc[0][1] = _mm512_dpbusd_epi32(acc[0][1], x, _mm512_loadu_si512(b.add(64).cast()));
            b = b.add(K_GROUP_BYTES);
            g += 1;
        }
        let tail = k % KR;
        if tail != 0 {
            let x = _mm512_set1_epi32(load_tail_u32(a.add(groups * KR), tail));
            acc[1][0] = _mm512_dpbusd_epi32(acc[1][0], x, _mm512_loadu_si512(b.cast()));
            acc[1][1] = _mm512_dpbusd_epi32(acc[1][1], x, _mm512_loadu_si512(b.add(64).cast()));
        }
        let mut sum = [_mm512_setzero_si512(); VECS];
        for acc in &acc {
            for (s, &v) in sum.iter_mut().zip(acc) {
                *s = _mm512_add_epi32(*s, v);
            }
        }
        [sum]
    }
}

/// Runs one tile of `R` rows and writes its outputs.
///
/// # Safety
/// AVX-512 VNNI enabled; `args` and the epilogue satisfy the kernel contract; `t` lies
/// inside `args`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn run_tile<const R: usize, O: Output>(args: &GemmArgs<O::T>, o: &O, t: Tile) {
    // SAFETY: `t` is inside the call's rows/columns, so the row and panel pointers and
    // the output rows are inside the caller's buffers.
    unsafe {
        let a = args.a.add(t.row * args.a_stride);
        let panel_bytes = args.k.div_ceil(KR) * KR * NR;
        let panel = args.packed.add(t.panel * panel_bytes);
        let acc = match (R, t.prefetch_panel) {
            (1, None) => widen::<R>(accumulate_row::<false>(a, args.k, panel, panel)),
            (1, Some(p)) => widen::<R>(accumulate_row::<true>(
                a,
                args.k,
                panel,
                args.packed.add(p * panel_bytes),
            )),
            (_, None) => accumulate::<R, false>(a, args.a_stride, args.k, panel, panel),
            (_, Some(p)) => accumulate::<R, true>(
                a,
                args.a_stride,
                args.k,
                panel,
                args.packed.add(p * panel_bytes),
            ),
        };
        let masks = column_masks(t.nc);
        let cols = o.columns(t.n0);
        // By index: `acc.into_iter()` moved the whole R x VECS array through `memcpy`
        // in the per-row instantiation.
        for (r, acc) in acc.iter().enumerate() {
            store_row(o, args, &cols, *acc, t.row + r, t.n0, masks);
        }
    }
}

/// The loop nest (see [`crate::blocking`]) with this kernel's tile.
///
/// # Safety
/// AVX-512 VNNI enabled; kernel contract on `args` / epilogue.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn drive<O: Output>(args: &GemmArgs<O::T>, o: &O) {
    for t in Tiles::new(args.m, args.k, args.n_begin, args.n_end, MR, NR) {
        // SAFETY: `Tiles` yields tiles inside the call's range with 1 <= rows <= MR;
        // the features are enabled here.
        unsafe {
            match t.rows {
                1 => run_tile::<1, O>(args, o, t),
                2 => run_tile::<2, O>(args, o, t),
                3 => run_tile::<3, O>(args, o, t),
                4 => run_tile::<4, O>(args, o, t),
                5 => run_tile::<5, O>(args, o, t),
                6 => run_tile::<6, O>(args, o, t),
                7 => run_tile::<7, O>(args, o, t),
                _ => run_tile::<8, O>(args, o, t),
            }
        }
    }
}

/// The GEMV kernel's loop nest: the blocking of [`drive`] with one-row tiles, so every
/// row runs the GEMV accumulation ([`accumulate_row`]). For M = 1 this is exactly the
/// tile sequence [`drive`] runs.
///
/// # Safety
/// AVX-512 VNNI enabled; kernel contract on `args` / epilogue.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn drive_rows<O: Output>(args: &GemmArgs<O::T>, o: &O) {
    for t in Tiles::new(args.m, args.k, args.n_begin, args.n_end, 1, NR) {
        // SAFETY: `Tiles` with `mr = 1` yields one-row tiles inside the call's range;
        // the features are enabled here.
        unsafe { run_tile::<1, O>(args, o, t) }
    }
}
