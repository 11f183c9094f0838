//! The kernel-level test harness shared by every kernel crate (x86 and ARM alike), built
//! with the `kernel-harness` feature (the kernel crates enable it in their
//! dev-dependencies; without it this crate has no unsafe code at all).
//!
//! A kernel's entry points are called directly through its [`KernelDesc`] (no API, no
//! driver), on the portable packer's output in the kernel's layout and the epilogues
//! folded by this crate, and every output is compared bit for bit:
//!
//! * static outputs against [`crate::static_linear`] (the literal oracle, through
//!   [`StaticCase::oracle`]);
//! * dynamic outputs (per tensor) against the literal [`crate::dynamic_linear`] on an f32
//!   input quantized by the kernel's own `quantize` (itself checked against the portable
//!   quantizer), and against the scalar [`DynamicEpilogue::apply`] fed with exact integer
//!   products of the case's own bytes;
//! * per-row dynamic outputs against the literal [`crate::dynamic_linear_per_row`] on an
//!   input quantized row by row with the kernel's `min_max` / `quantize`, and against
//!   [`DynamicEpilogue::apply_row`] with random row qparams (subnormal to huge scales);
//! * the kernel's own packer (when it has one) against [`crate::pack::pack_panel`] and
//!   [`crate::pack::column_sums`].
//!
//! Every output lives in a buffer whose row stride may exceed `n`, with [`GUARD`]
//! elements before the first row and after the last: every element outside the computed
//! rows and columns (stride gaps, guards, columns outside the call's range) must keep its
//! canary ([`CANARY_U8`] / [`CANARY_F32`]). Calls are cut as the API's thread driver
//! cuts them ([`Split`]): into row pieces (activations, outputs, row sums and row qparams
//! offset together) and column ranges starting on panel boundaries.
//!
//! Entry points: [`check_kernel`] (the edge catalogue of the kernel's tile through
//! [`check_shape`], then the edge-scale sweep) and the finer-grained [`edge_static`],
//! [`edge_dynamic`], [`extreme`], [`edge_scales`], [`splits`] and [`random`]. Each skips,
//! printing `SKIP ...`, when the CPU lacks the kernel's ISA, unless `QLINEAR_REQUIRE`
//! (comma-separated backend names, or `all`) lists its backend: then it fails. Under Miri
//! ([`kernel_shapes`], [`sweep_shapes`]) the shape lists are small subsets.
// Calling kernels through their `unsafe fn` entry points is the point of this module.
#![allow(unsafe_code)]
// Telling the person running the tests about a skipped kernel is the point too.
#![allow(clippy::print_stderr)]

use crate::contract::{DynamicEpilogue, GemmArgs, KernelDesc, RowQParams, StaticEpilogue};
use crate::pack::{column_sums, pack, pack_panel, row_sum};
use crate::testkit::{
    edge_scale_sweep, edge_shapes, per_row_input, random_row_qparams, Rng, StaticCase,
};
use crate::MatRef;

/// The byte every static output element outside the computed block must keep.
pub const CANARY_U8: u8 = 0xA5;
/// The bits (a NaN payload no kernel produces) every dynamic output element outside the
/// computed block must keep.
pub const CANARY_F32: u32 = 0x7FC0_DEAD;
/// Canaried elements before the first output row and after the last one.
pub const GUARD: usize = 64;

/// Whether `d` can run on this CPU. When it cannot, prints `SKIP ...` and returns
/// `false`, or panics when `QLINEAR_REQUIRE` (comma-separated backend names, or `all`)
/// lists the kernel's backend.
pub fn available(d: &KernelDesc) -> bool {
    if (d.is_supported)() {
        return true;
    }
    let required = std::env::var("QLINEAR_REQUIRE").unwrap_or_default();
    assert!(
        !required
            .split(',')
            .any(|b| b.trim() == d.isa.name() || b.trim() == "all"),
        "QLINEAR_REQUIRE lists {}, which this CPU lacks ({})",
        d.isa,
        d.name
    );
    eprintln!("SKIP {}: not supported on this CPU", d.name);
    false
}

/// How one logical GEMM is cut into kernel calls: the columns computed at all (panels
/// `[first_panel, end_panel)`, clipped to `n`; the others must keep their canaries), a
/// row cut and a panel cut inside them (up to four calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// The row where the second row piece starts (clamped to `m`; 0 or `m`: one piece).
    pub row: usize,
    /// The panel where the second column piece starts (clamped into the computed
    /// columns; at or before `first_panel`: one piece).
    pub panel: usize,
    /// The first computed panel.
    pub first_panel: usize,
    /// One past the last computed panel (`usize::MAX`: up to `n`).
    pub end_panel: usize,
}

impl Split {
    /// One call over every row and column.
    pub const WHOLE: Split = Split {
        row: 0,
        panel: 0,
        first_panel: 0,
        end_panel: usize::MAX,
    };

    /// Every column, cut at row `row` and panel `panel`.
    pub const fn at(row: usize, panel: usize) -> Split {
        Split {
            row,
            panel,
            ..Split::WHOLE
        }
    }

    /// The computed columns `[begin, end)` of an `n`-column output in panels of `nr`.
    pub fn cols(&self, n: usize, nr: usize) -> (usize, usize) {
        let end = self.end_panel.saturating_mul(nr).min(n);
        ((self.first_panel * nr).min(end), end)
    }
}

/// Calls `f` once per (row piece, column piece) of `split`, the rows cut by
/// [`GemmArgs::rows`] as the driver cuts them. `args` covers all rows and columns
/// `[0, n)`.
fn for_each_chunk<T>(args: GemmArgs<T>, nr: usize, split: Split, mut f: impl FnMut(&GemmArgs<T>)) {
    let (c_lo, c_hi) = split.cols(args.n_end, nr);
    let row_cut = split.row.min(args.m);
    let col_cut = (split.panel.saturating_mul(nr)).clamp(c_lo, c_hi);
    for (r0, r1) in [(0, row_cut), (row_cut, args.m)] {
        for (c0, c1) in [(c_lo, col_cut), (col_cut, c_hi)] {
            if r0 == r1 || c0 == c1 {
                continue;
            }
            let mut c = args.rows(r0, r1 - r0);
            c.n_begin = c0;
            c.n_end = c1;
            f(&c);
        }
    }
}

/// An output element type with its canary.
trait Cell: Copy {
    const CANARY: Self;
    fn bits(self) -> u32;
}

impl Cell for u8 {
    const CANARY: u8 = CANARY_U8;
    fn bits(self) -> u32 {
        self as u32
    }
}

impl Cell for f32 {
    const CANARY: f32 = f32::from_bits(CANARY_F32);
    fn bits(self) -> u32 {
        self.to_bits()
    }
}

/// An `m x n` output with row stride `n + extra_stride` between two guards, all canaries.
struct Output<T> {
    buf: Vec<T>,
    m: usize,
    n: usize,
    stride: usize,
}

impl<T: Cell + std::fmt::Debug> Output<T> {
    fn new(m: usize, n: usize, extra_stride: usize) -> Self {
        let stride = n + extra_stride;
        Output {
            buf: vec![T::CANARY; 2 * GUARD + m * stride],
            m,
            n,
            stride,
        }
    }

    fn ptr(&mut self) -> *mut T {
        self.buf[GUARD..].as_mut_ptr()
    }

    /// Every element of columns `cols` of the `m` rows equals `want(i, j)` bit for bit;
    /// every other element (other columns, stride gaps, guards) is still a canary.
    fn check(
        &self,
        cols: (usize, usize),
        want: impl Fn(usize, usize) -> T,
        what: impl Fn() -> String,
    ) {
        for (idx, &v) in self.buf.iter().enumerate() {
            let (i, j) = (
                idx.wrapping_sub(GUARD) / self.stride,
                idx.wrapping_sub(GUARD) % self.stride,
            );
            if idx >= GUARD && i < self.m && j < self.n && (cols.0..cols.1).contains(&j) {
                let w = want(i, j);
                assert_eq!(
                    v.bits(),
                    w.bits(),
                    "{}: out[{i},{j}] {v:?} vs {w:?}",
                    what()
                );
            } else {
                assert_eq!(
                    v.bits(),
                    T::CANARY.bits(),
                    "{}: stray write at element {idx} (guard {GUARD}, row stride {})",
                    what(),
                    self.stride
                );
            }
        }
    }
}

/// The case's weights packed in the kernel's layout, with the sums its epilogues need.
struct Packed {
    data: Vec<u8>,
    col_sums: Vec<i32>,
    n_pad: usize,
    /// Row sums of the case's activations; empty when every weight zero point is 0 (the
    /// kernel then gets a null `row_sums`).
    row_sums: Vec<i32>,
}

fn prepare(d: &KernelDesc, c: &StaticCase) -> Packed {
    let row_sums = if c.wq.all_zero_points_zero() {
        Vec::new()
    } else {
        (0..c.m)
            .map(|i| row_sum(&c.a[i * c.a_stride..i * c.a_stride + c.k]))
            .collect()
    };
    Packed {
        data: pack(&c.w, c.n, c.k, d.layout),
        col_sums: column_sums(&c.w, c.n, c.k),
        n_pad: d.layout.n_padded(c.n),
        row_sums,
    }
}

/// The arguments of one call over all of `c` (its activations, all rows and columns).
fn args<T>(c: &StaticCase, p: &Packed, out: *mut T, out_stride: usize) -> GemmArgs<T> {
    GemmArgs {
        a: c.a.as_ptr(),
        a_stride: c.a_stride,
        m: c.m,
        k: c.k,
        packed: p.data.as_ptr(),
        n_begin: 0,
        n_end: c.n,
        row_sums: if p.row_sums.is_empty() {
            std::ptr::null()
        } else {
            p.row_sums.as_ptr()
        },
        row_qparams: std::ptr::null(),
        out,
        out_stride,
    }
}

/// The exact integer product of activation row `row` and weight row `j`.
fn dot(row: &[u8], w: &[i8], k: usize, j: usize) -> i32 {
    row.iter()
        .zip(&w[j * k..(j + 1) * k])
        .fold(0i32, |s, (&x, &y)| s.wrapping_add(x as i32 * y as i32))
}

/// The kernel's own packer (when it has one) writes exactly the portable packer's bytes
/// and column sums, panel by panel. `d`'s ISA must be available (see [`available`]).
pub fn check_packer(d: &KernelDesc, c: &StaticCase) {
    let Some(fast) = d.pack_panel else {
        return;
    };
    assert!((d.is_supported)(), "{}: not supported here", d.name);
    let layout = d.layout;
    let (n, k, nr) = (c.n, c.k, layout.nr);
    let mut got = vec![0x5Au8; layout.panel_bytes(k)];
    let mut want = vec![0u8; layout.panel_bytes(k)];
    let mut sums = vec![0x5A5A_5A5Ai32; nr];
    let mut want_sums = column_sums(&c.w, n, k);
    want_sums.resize(layout.n_padded(n), 0);
    for p in 0..layout.n_padded(n) / nr {
        pack_panel(&c.w, n, k, layout, p, &mut want);
        // SAFETY: the kernel's ISA is supported (asserted above); `w` is n x k, `got`
        // one panel, `sums` nr values, p < n_pad / nr.
        unsafe { fast(&c.w, n, k, p, &mut got, &mut sums) };
        assert_eq!(got, want, "{} packer: n={n} k={k} panel {p}", d.name);
        assert_eq!(
            sums,
            want_sums[p * nr..(p + 1) * nr],
            "{} column sums: n={n} k={k} panel {p}",
            d.name
        );
    }
}

/// The static entry on the pieces of `split`, output row stride `n + extra_stride`,
/// against the literal oracle and the canaries. `d`'s ISA must be available.
pub fn check_static(d: &KernelDesc, c: &StaticCase, split: Split, extra_stride: usize) {
    assert!((d.is_supported)(), "{}: not supported here", d.name);
    let (m, k, n) = (c.m, c.k, c.n);
    let p = prepare(d, c);
    let epi = StaticEpilogue::new(
        c.profile,
        c.x,
        &c.wq,
        &p.col_sums,
        k,
        c.bias.as_deref(),
        c.y,
        c.relu,
        p.n_pad,
    );
    let a = MatRef::new(&c.a, m, k, c.a_stride).unwrap();
    let want = c.oracle(&a).unwrap();
    let mut out = Output::<u8>::new(m, n, extra_stride);
    let all = args(c, &p, out.ptr(), out.stride);
    for_each_chunk(all, d.layout.nr, split, |ch| {
        // SAFETY: the ISA is supported (asserted above); the piece's rows and columns lie
        // in the activations, the whole packing in the kernel's layout, the epilogue
        // padded to whole panels, and the canaried output; n_begin is on a panel boundary.
        unsafe { (d.gemm_u8)(ch, &epi) }
    });
    out.check(
        split.cols(n, d.layout.nr),
        |i, j| want[i * n + j],
        || {
            format!(
                "{} static m={m} k={k} n={n} {split:?} stride +{extra_stride} {:?}",
                d.name, c.profile
            )
        },
    );
}

/// The dynamic (per tensor) entry on the pieces of `split`, output row stride
/// `n + extra_stride`, with the canaries checked, twice:
///
/// 1. on the case's f32 input ([`StaticCase::dynamic_input`]) quantized by the kernel's
///    own `quantize` (checked against the portable quantizer, bytes and row sums) with
///    the input qparams torch chooses, against the literal [`crate::dynamic_linear`];
/// 2. on the case's own bytes with its input qparams, against
///    [`DynamicEpilogue::apply`] on exact integer products.
///
/// `d`'s ISA must be available.
pub fn check_dynamic(d: &KernelDesc, c: &StaticCase, split: Split, extra_stride: usize) {
    assert!((d.is_supported)(), "{}: not supported here", d.name);
    let (m, k, n) = (c.m, c.k, c.n);
    let nr = d.layout.nr;
    let cols = split.cols(n, nr);
    let p = prepare(d, c);
    let what = |part: &str| {
        format!(
            "{} dynamic ({part}) m={m} k={k} n={n} {split:?} stride +{extra_stride} {:?}",
            d.name, c.profile
        )
    };

    // The case's epilogue for input qparams (scale, zero point).
    let epilogue = |scale, zero_point| {
        DynamicEpilogue::new(
            c.profile,
            scale,
            zero_point,
            &c.wq,
            &p.col_sums,
            k,
            c.bias.as_deref(),
            c.relu,
            p.n_pad,
        )
    };

    // 1. The literal layer, through the kernel's quantizer.
    let xf = c.dynamic_input();
    let xin = MatRef::new(&xf, m, k, c.a_stride).unwrap();
    let want = c.dynamic_oracle(&xin, false).unwrap();
    let qp = crate::choose_dynamic_qparams(&xin, false).unwrap();
    let mut q = vec![0u8; m * k];
    // SAFETY: the kernel's ISA is supported (asserted above); `q` holds m x k bytes.
    let q_sums = unsafe { (d.quantize)(&xin, qp.scale, qp.zero_point, &mut q) };
    let mut want_q = vec![0u8; m * k];
    let want_sums =
        crate::activation::quantize_rows_portable(&xin, qp.scale, qp.zero_point, &mut want_q);
    assert_eq!(q, want_q, "{}: quantize", what("literal"));
    assert_eq!(q_sums, want_sums, "{}: quantize row sums", what("literal"));
    let epi = epilogue(qp.scale, qp.zero_point);
    let mut out = Output::<f32>::new(m, n, extra_stride);
    let mut all = args(c, &p, out.ptr(), out.stride);
    all.a = q.as_ptr();
    all.a_stride = k;
    if !all.row_sums.is_null() {
        all.row_sums = q_sums.as_ptr();
    }
    for_each_chunk(all, nr, split, |ch| {
        // SAFETY: as in `check_static`, with the dense quantized input and its m row sums.
        unsafe { (d.gemm_f32)(ch, &epi) }
    });
    out.check(cols, |i, j| want[i * n + j], || what("literal"));

    // 2. The case's bytes against the scalar epilogue.
    let epi = epilogue(c.x.scale, c.x.zero_point);
    let mut out = Output::<f32>::new(m, n, extra_stride);
    let all = args(c, &p, out.ptr(), out.stride);
    for_each_chunk(all, nr, split, |ch| {
        // SAFETY: as in `check_static`.
        unsafe { (d.gemm_f32)(ch, &epi) }
    });
    out.check(
        cols,
        |i, j| {
            let row = &c.a[i * c.a_stride..i * c.a_stride + k];
            epi.apply(dot(row, &c.w, k, j), row_sum(row), j)
        },
        || what("apply"),
    );
}

/// Per-row dynamic mode on the pieces of `split`, output row stride `n + extra_stride`,
/// with the canaries checked, twice:
///
/// 1. an input whose rows differ in magnitude, quantized row by row with the kernel's
///    own `min_max` (checked against the portable one) and `quantize`, against the
///    literal [`crate::dynamic_linear_per_row`];
/// 2. the case's own bytes with random per-row qparams (subnormal to huge scales, zero
///    points 0 and 255) against the scalar [`DynamicEpilogue::apply_row`].
///
/// `d`'s ISA must be available.
pub fn check_per_row(d: &KernelDesc, c: &StaticCase, split: Split, extra_stride: usize) {
    assert!((d.is_supported)(), "{}: not supported here", d.name);
    let p = prepare(d, c);
    let (m, k, n) = (c.m, c.k, c.n);
    let nr = d.layout.nr;
    let cols = split.cols(n, nr);
    let epi = DynamicEpilogue::new_per_row(
        c.profile,
        &c.wq,
        &p.col_sums,
        k,
        c.bias.as_deref(),
        c.relu,
        p.n_pad,
    );
    let need_sums = !c.wq.all_zero_points_zero();
    let mut rng = Rng::new((m * 1_000_003 + k * 1009 + n * 31 + cols.0 * 7 + extra_stride) as u64);
    let what = |part: &str| {
        format!(
            "{} per-row ({part}) m={m} k={k} n={n} {split:?} stride +{extra_stride} {:?}",
            d.name, c.profile
        )
    };

    // Runs the pieces into a canaried output.
    let run = |a: &[u8], a_stride: usize, sums: &[i32], rows: &[RowQParams]| {
        let mut out = Output::<f32>::new(m, n, extra_stride);
        let mut all = args(c, &p, out.ptr(), out.stride);
        all.a = a.as_ptr();
        all.a_stride = a_stride;
        all.row_sums = if need_sums {
            sums.as_ptr()
        } else {
            std::ptr::null()
        };
        all.row_qparams = rows.as_ptr();
        for_each_chunk(all, nr, split, |ch| {
            // SAFETY: the ISA is supported (asserted above); the piece's rows and columns
            // lie in the activations, the packing and the canaried output; `rows` and
            // `sums` hold m entries, offset with the piece.
            unsafe { (d.gemm_f32)(ch, &epi) }
        });
        out
    };

    // 1. Real per-row quantization against the literal layer.
    let rr = rng.coin();
    let xf = per_row_input(&mut rng, m, k, c.a_stride);
    let xin = MatRef::new(&xf, m, k, c.a_stride).unwrap();
    let want = c.dynamic_oracle_per_row(&xin, rr).unwrap();
    let rr = rr && c.profile == crate::Profile::Fbgemm;
    let mut q = vec![0u8; m * k];
    let mut rows = Vec::with_capacity(m);
    let mut sums = Vec::with_capacity(m);
    for i in 0..m {
        let row = MatRef::dense(xin.row(i), 1, k).unwrap();
        // SAFETY: the ISA is supported (asserted above).
        let (lo, hi) = unsafe { (d.min_max)(&row) }.unwrap();
        assert_eq!(
            (lo.to_bits(), hi.to_bits()),
            {
                let (l, h) = crate::activation::min_max_finite_portable(&row).unwrap();
                (l.to_bits(), h.to_bits())
            },
            "{}: min_max of row {i}",
            what("literal")
        );
        let qp = crate::quantize::dynamic_qparams_from_min_max(lo, hi, rr);
        // SAFETY: as above; the output slice holds the row's k bytes.
        let s = unsafe { (d.quantize)(&row, qp.scale, qp.zero_point, &mut q[i * k..(i + 1) * k]) };
        rows.push(RowQParams {
            scale: qp.scale,
            zero_point: qp.zero_point,
        });
        sums.push(s[0].wrapping_sub(DynamicEpilogue::row_sum_adjustment(k, qp.zero_point)));
    }
    run(&q, k, &sums, &rows).check(cols, |i, j| want[i * n + j], || what("literal"));

    // 2. Random row qparams on the case's bytes against `apply_row`.
    let rows = random_row_qparams(&mut rng, m);
    let sums: Vec<i32> = (0..m)
        .map(|i| {
            row_sum(&c.a[i * c.a_stride..i * c.a_stride + k])
                .wrapping_sub(DynamicEpilogue::row_sum_adjustment(k, rows[i].zero_point))
        })
        .collect();
    run(&c.a, c.a_stride, &sums, &rows).check(
        cols,
        |i, j| {
            let row = &c.a[i * c.a_stride..i * c.a_stride + k];
            let rs = if need_sums { sums[i] } else { 0 };
            epi.apply_row(dot(row, &c.w, k, j), rs, Some(rows[i]), j)
        },
        || format!("{} {:?}", what("random qparams"), rows),
    );
}

/// The shapes [`check_kernel`] runs through [`check_shape`]: the whole edge catalogue
/// of the tile ([`edge_shapes`]).
#[cfg(not(miri))]
pub fn kernel_shapes(mr: usize, nr: usize, kr: usize) -> Vec<(usize, usize, usize)> {
    edge_shapes(mr, nr, kr)
}

/// Under Miri (every operation interpreted, orders of magnitude slower) a subset of the
/// catalogue: every partial M up to `mr + 1`, K around the k-group (below, at, above,
/// and a tail after whole groups), N around the panel width, and one shape with two row
/// tiles, three panels and a K tail (so the column-range splits run too).
#[cfg(miri)]
pub fn kernel_shapes(mr: usize, nr: usize, kr: usize) -> Vec<(usize, usize, usize)> {
    let ks = [1, kr - 1, kr, kr + 1, 2 * kr + 3];
    let ns = [1, nr - 1, nr, nr + 1, 2 * nr + 3];
    let mut shapes: Vec<_> = (1..=mr + 1)
        .map(|m| (m, ks[m % ks.len()], ns[m % ns.len()]))
        .collect();
    shapes.push((mr + 1, 2 * kr + 3, 2 * nr + 3));
    shapes
}

/// The shapes of the edge-scale sweep ([`edge_scales`], [`check_kernel`]).
#[cfg(not(miri))]
pub fn sweep_shapes(mr: usize, nr: usize, _kr: usize) -> Vec<(usize, usize, usize)> {
    vec![
        (1, 5, nr + 1),
        (mr + 1, 67, 2 * nr + 3),
        (2 * mr + 1, 300, nr - 1),
    ]
}

/// Under Miri, one small shape of the edge-scale sweep (two row tiles, a K tail, a
/// second panel with one valid column).
#[cfg(miri)]
pub fn sweep_shapes(mr: usize, nr: usize, kr: usize) -> Vec<(usize, usize, usize)> {
    vec![(mr + 1, kr + 1, nr + 1)]
}

/// A random row cut and panel cut of an `m x n` output (either may be no cut).
fn random_split(rng: &mut Rng, m: usize, n: usize, nr: usize) -> Split {
    Split::at(rng.below(m + 1), rng.below(n.div_ceil(nr) + 1))
}

/// One shape on `d` (whose ISA the caller checked with [`available`]): a random and an
/// extreme case, each through the kernel's packer, then static and dynamic (per tensor
/// and per row) in canaried strided outputs: one call over everything (static, per
/// tensor), row pieces (per row), and past one panel the column ranges threads get:
/// the first panel alone, and the rest cut at a random row and panel. The cases' input
/// rows end exactly at the end of their buffers.
pub fn check_shape(d: &KernelDesc, rng: &mut Rng, m: usize, k: usize, n: usize) {
    let nr = d.layout.nr;
    for variant in 0..2 {
        let c = if variant == 0 {
            StaticCase::random(rng, m, k, n)
        } else {
            StaticCase::extreme(m, k, n, rng)
        };
        check_packer(d, &c);
        check_static(d, &c, Split::WHOLE, rng.below(3));
        check_dynamic(d, &c, Split::WHOLE, rng.below(3));
        check_per_row(d, &c, Split::at(rng.below(m + 1), 0), rng.below(3));
        if n > nr {
            let first = Split {
                end_panel: 1,
                ..Split::WHOLE
            };
            let rest = Split {
                first_panel: 1,
                ..random_split(rng, m, n, nr)
            };
            check_static(d, &c, first, rng.below(3));
            check_dynamic(d, &c, first, rng.below(3));
            check_static(d, &c, rest, rng.below(3));
            check_dynamic(d, &c, rest, rng.below(3));
            check_per_row(d, &c, rest, rng.below(3));
        }
    }
}

/// The edge-scale sweep on `rng`'s cases: static, dynamic and per row, per row cut at a
/// random row.
fn sweep(d: &KernelDesc, rng: &mut Rng) {
    for (m, k, n) in sweep_shapes(d.mr, d.layout.nr, d.layout.kr) {
        for c in edge_scale_sweep(rng, m, k, n) {
            check_static(d, &c, Split::WHOLE, 1);
            check_dynamic(d, &c, Split::WHOLE, 2);
            check_per_row(d, &c, Split::at(rng.below(m + 1), 0), 1);
        }
    }
}

/// Everything for one kernel: [`check_shape`] on each of [`kernel_shapes`] (the edge
/// catalogue of its tile), then the edge-scale sweep (scales from the smallest
/// subnormal to `f32::MAX`, signed-zero and huge biases) on [`sweep_shapes`]. Skips
/// through [`available`].
pub fn check_kernel(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(0x5eed ^ d.name.len() as u64);
    for (m, k, n) in kernel_shapes(d.mr, d.layout.nr, d.layout.kr) {
        check_shape(d, &mut rng, m, k, n);
    }
    sweep(d, &mut rng);
}

/// The edge catalogue ([`edge_shapes`]), random cases, the kernel's packer and the static
/// entry in one call each, strided outputs. Skips through [`available`].
pub fn edge_static(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(1);
    for (m, k, n) in edge_shapes(d.mr, d.layout.nr, d.layout.kr) {
        let c = StaticCase::random(&mut rng, m, k, n);
        check_packer(d, &c);
        check_static(d, &c, Split::WHOLE, rng.below(3));
    }
}

/// The edge catalogue ([`edge_shapes`]), random cases, dynamic per tensor and per row in
/// one call each, strided outputs. Skips through [`available`].
pub fn edge_dynamic(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(2);
    for (m, k, n) in edge_shapes(d.mr, d.layout.nr, d.layout.kr) {
        let c = StaticCase::random(&mut rng, m, k, n);
        check_dynamic(d, &c, Split::WHOLE, rng.below(3));
        check_per_row(d, &c, Split::WHOLE, rng.below(3));
    }
}

/// Activations 255 / weights -128 and 127 / zero points at the extremes over the
/// contract's longest K ([`crate::K_LIMIT`]), plus K just around the kernels' blocks.
/// Skips through [`available`].
pub fn extreme(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(3);
    for &(m, k, n) in &[
        (5, crate::K_LIMIT, 19),
        (1, crate::K_LIMIT, 17),
        (4, crate::K_LIMIT - 1, 16),
        (3, 4099, 33),
        (9, 17, 35),
    ] {
        for _ in 0..2 {
            let mut c = StaticCase::extreme(m, k, n, &mut rng);
            check_static(d, &c, Split::WHOLE, 1);
            // All-255 activations too (extreme() leaves some zeros).
            c.a.iter_mut().for_each(|v| *v = 255);
            check_static(d, &c, Split::WHOLE, 0);
            check_dynamic(d, &c, Split::WHOLE, 2);
        }
    }
}

/// The test kit's edge-scale sweep ([`edge_scale_sweep`] on [`sweep_shapes`]) around
/// the tile: static, dynamic and per row. Skips through [`available`].
pub fn edge_scales(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    sweep(d, &mut Rng::new(5));
}

/// Row and panel splits of one call (as the API's thread driver makes them), strided in
/// and out, on each of `shapes` with three splits. Skips through [`available`].
pub fn splits(d: &KernelDesc, shapes: &[(usize, usize, usize)]) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(4);
    for &(m, k, n) in shapes {
        for split in [Split::at(1, 1), Split::at(5, 2), Split::at(3, 0)] {
            let c = StaticCase::random(&mut rng, m, k, n);
            check_static(d, &c, split, 5);
            check_dynamic(d, &c, split, 3);
            check_per_row(d, &c, split, 2);
        }
    }
}

/// One property-test case: a random case of shape `m x k x n` from `seed`, static,
/// dynamic and per row on a random row and panel split. Skips through [`available`].
pub fn random(d: &KernelDesc, seed: u64, m: usize, k: usize, n: usize) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(seed);
    let c = StaticCase::random(&mut rng, m, k, n);
    let split = random_split(&mut rng, m, n, d.layout.nr);
    check_static(d, &c, split, rng.below(4));
    check_dynamic(d, &c, split, rng.below(4));
    check_per_row(d, &c, split, rng.below(4));
}
