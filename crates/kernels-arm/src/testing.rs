//! Kernel-level tests, generated for every registered kernel by `kernel_registry!`.
//!
//! Each kernel entry is called directly (no API layer) on weights packed by the generic
//! packer into the kernel's layout, with epilogues folded by the reference crate, and the
//! outputs are compared bit for bit: static outputs against
//! [`qlinear_reference::static_linear`] (the literal oracle), dynamic outputs against the
//! scalar [`DynamicEpilogue::apply`] fed with exact integer products (the reference crate
//! proves `apply` equal to its literal dynamic layer). Outputs sit in a buffer with canary
//! bytes before, after and between rows (the row stride exceeds `n`), and calls are split
//! over rows and panels as the API's thread driver may split them.
#![allow(clippy::print_stderr)]

use qlinear_reference::contract::{
    DynamicEpilogue, GemmArgs, KernelDesc, RowQParams, StaticEpilogue,
};
use qlinear_reference::pack::{column_sums, pack, row_sum};
use qlinear_reference::testkit::{
    edge_scale_sweep, edge_shapes, per_row_input, random_row_qparams, Rng, StaticCase,
};
use qlinear_reference::MatRef;

const CANARY_U8: u8 = 0xA5;
const CANARY_F32: u32 = 0x7FC0_DEAD;
const GUARD: usize = 64;

/// Whether the kernel can run here; a skip becomes a failure when its backend is listed
/// in `QLINEAR_REQUIRE` (comma-separated backend names, or `all`).
fn available(d: &KernelDesc) -> bool {
    if (d.is_supported)() {
        return true;
    }
    let required = std::env::var("QLINEAR_REQUIRE").unwrap_or_default();
    assert!(
        !required
            .split(',')
            .any(|b| b.trim() == d.isa.name() || b.trim() == "all"),
        "{} is required by QLINEAR_REQUIRE but this CPU lacks it",
        d.name
    );
    eprintln!("skipping {}: not supported by this CPU", d.name);
    false
}

/// How one logical GEMM is cut into kernel calls: a row split point and a panel split.
#[derive(Clone, Copy)]
struct Split {
    row: usize,
    panel: usize,
}

/// Calls `f` once per (row chunk, column chunk) of `split`, with adjusted arguments.
fn for_each_chunk<T>(args: GemmArgs<T>, nr: usize, split: Split, mut f: impl FnMut(&GemmArgs<T>)) {
    let row_cut = split.row.min(args.m);
    let col_cut = (split.panel * nr).min(args.n_end);
    for (r0, r1) in [(0, row_cut), (row_cut, args.m)] {
        for (c0, c1) in [(0, col_cut), (col_cut, args.n_end)] {
            if r0 == r1 || c0 == c1 {
                continue;
            }
            let mut c = args;
            c.a = args.a.wrapping_add(r0 * args.a_stride);
            c.out = args.out.wrapping_add(r0 * args.out_stride);
            if !args.row_sums.is_null() {
                c.row_sums = args.row_sums.wrapping_add(r0);
            }
            if !args.row_qparams.is_null() {
                c.row_qparams = args.row_qparams.wrapping_add(r0);
            }
            c.m = r1 - r0;
            c.n_begin = c0;
            c.n_end = c1;
            f(&c);
        }
    }
}

struct Packed {
    data: Vec<u8>,
    col_sums: Vec<i32>,
    n_pad: usize,
    row_sums: Vec<i32>,
}

fn prepare(d: &KernelDesc, c: &StaticCase) -> Packed {
    let data = pack(&c.w, c.n, c.k, d.layout);
    let col_sums = column_sums(&c.w, c.n, c.k);
    let row_sums = if c.wq.all_zero_points_zero() {
        Vec::new()
    } else {
        (0..c.m)
            .map(|i| row_sum(&c.a[i * c.a_stride..i * c.a_stride + c.k]))
            .collect()
    };
    Packed {
        data,
        col_sums,
        n_pad: d.layout.n_padded(c.n),
        row_sums,
    }
}

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

/// Runs the static entry and checks it against the oracle and the canaries.
fn check_static(d: &KernelDesc, c: &StaticCase, split: Split, extra_stride: usize) {
    let p = prepare(d, c);
    let epi = StaticEpilogue::new(
        c.profile,
        c.x,
        &c.wq,
        &p.col_sums,
        c.k,
        c.bias.as_deref(),
        c.y,
        c.relu,
        p.n_pad,
    );
    let a = MatRef::new(&c.a, c.m, c.k, c.a_stride).unwrap();
    let want = c.oracle(&a).unwrap();
    let stride = c.n + extra_stride;
    let mut buf = vec![CANARY_U8; 2 * GUARD + c.m * stride];
    let out = buf[GUARD..].as_mut_ptr();
    let all = args(c, &p, out, stride);
    for_each_chunk(all, d.layout.nr, split, |ch| {
        // SAFETY: the chunk covers rows and columns of valid buffers built above; the
        // packing and epilogue are in the kernel's layout; the kernel is supported.
        unsafe { (d.gemm_u8)(ch, &epi) }
    });
    for (idx, &b) in buf.iter().enumerate() {
        let inside = idx >= GUARD && (idx - GUARD) / stride < c.m && (idx - GUARD) % stride < c.n;
        if inside {
            let (i, j) = ((idx - GUARD) / stride, (idx - GUARD) % stride);
            assert_eq!(
                b,
                want[i * c.n + j],
                "{}: static m={} k={} n={} at ({i},{j}) profile {:?}",
                d.name,
                c.m,
                c.k,
                c.n,
                c.profile
            );
        } else {
            assert_eq!(
                b, CANARY_U8,
                "{}: stray write at byte {idx} (m={} k={} n={})",
                d.name, c.m, c.k, c.n
            );
        }
    }
}

/// Runs the dynamic entry (activations = the case's bytes, input qparams = the case's)
/// and checks it against `DynamicEpilogue::apply` on exact products, and the canaries.
fn check_dynamic(d: &KernelDesc, c: &StaticCase, split: Split, extra_stride: usize) {
    let p = prepare(d, c);
    let epi = DynamicEpilogue::new(
        c.profile,
        c.x.scale,
        c.x.zero_point,
        &c.wq,
        &p.col_sums,
        c.k,
        c.bias.as_deref(),
        c.relu,
        p.n_pad,
    );
    let stride = c.n + extra_stride;
    let mut buf = vec![f32::from_bits(CANARY_F32); 2 * GUARD + c.m * stride];
    let out = buf[GUARD..].as_mut_ptr();
    let all = args(c, &p, out, stride);
    for_each_chunk(all, d.layout.nr, split, |ch| {
        // SAFETY: as in `check_static`.
        unsafe { (d.gemm_f32)(ch, &epi) }
    });
    for (idx, &v) in buf.iter().enumerate() {
        let inside = idx >= GUARD && (idx - GUARD) / stride < c.m && (idx - GUARD) % stride < c.n;
        if inside {
            let (i, j) = ((idx - GUARD) / stride, (idx - GUARD) % stride);
            let row = &c.a[i * c.a_stride..i * c.a_stride + c.k];
            let wrow = &c.w[j * c.k..(j + 1) * c.k];
            let acc = row
                .iter()
                .zip(wrow)
                .fold(0i32, |s, (&x, &y)| s.wrapping_add(x as i32 * y as i32));
            let want = epi.apply(acc, row_sum(row), j);
            assert_eq!(
                v.to_bits(),
                want.to_bits(),
                "{}: dynamic m={} k={} n={} at ({i},{j}): {v} vs {want}",
                d.name,
                c.m,
                c.k,
                c.n
            );
        } else {
            assert_eq!(
                v.to_bits(),
                CANARY_F32,
                "{}: stray write at element {idx}",
                d.name
            );
        }
    }
}

/// Per-row dynamic mode, on the chunks of `split` with an output row stride of
/// `n + extra_stride` inside canaries:
///
/// 1. an input whose rows differ in magnitude, quantized row by row with the kernel's
///    own `min_max` / `quantize`, against the literal `dynamic_linear_per_row`;
/// 2. the case's own bytes with random per-row qparams (subnormal to huge scales, zero
///    points 0 and 255) against the scalar `DynamicEpilogue::apply_row`.
fn check_per_row(d: &KernelDesc, c: &StaticCase, split: Split, extra_stride: usize) {
    let p = prepare(d, c);
    let (m, k, n) = (c.m, c.k, c.n);
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
    let mut rng = Rng::new((m * 1_000_003 + k * 1009 + n * 31 + extra_stride) as u64);
    let stride = n + extra_stride;

    // Runs the chunks into a canaried buffer; returns it.
    let run = |a: &[u8], a_stride: usize, sums: &[i32], rows: &[RowQParams]| {
        let mut buf = vec![f32::from_bits(CANARY_F32); 2 * GUARD + m * stride];
        let mut all = args(c, &p, buf[GUARD..].as_mut_ptr(), stride);
        all.a = a.as_ptr();
        all.a_stride = a_stride;
        all.row_sums = if need_sums {
            sums.as_ptr()
        } else {
            std::ptr::null()
        };
        all.row_qparams = rows.as_ptr();
        for_each_chunk(all, d.layout.nr, split, |ch| {
            // SAFETY: `available` checked the ISA; the chunk's rows and columns lie in
            // the activations, the packing and the canaried output buffer; `rows` and
            // `sums` hold m entries, offset with the chunk.
            unsafe { (d.gemm_f32)(ch, &epi) }
        });
        buf
    };
    let check = |buf: &[f32], want: &dyn Fn(usize, usize) -> f32, what: &str| {
        for (idx, &v) in buf.iter().enumerate() {
            let inside = idx >= GUARD && (idx - GUARD) / stride < m && (idx - GUARD) % stride < n;
            if inside {
                let (i, j) = ((idx - GUARD) / stride, (idx - GUARD) % stride);
                let w = want(i, j);
                assert_eq!(
                    v.to_bits(),
                    w.to_bits(),
                    "{}: per-row ({what}) m={m} k={k} n={n} at ({i},{j}): {v} vs {w}",
                    d.name
                );
            } else {
                assert_eq!(
                    v.to_bits(),
                    CANARY_F32,
                    "{}: stray write at element {idx}",
                    d.name
                );
            }
        }
    };

    // 1. Real per-row quantization against the literal layer.
    let rr = rng.coin();
    let xf = per_row_input(&mut rng, m, k, c.a_stride);
    let xin = MatRef::new(&xf, m, k, c.a_stride).unwrap();
    let want = qlinear_reference::dynamic_linear_per_row(
        &xin,
        &c.w,
        n,
        &c.wq,
        c.bias.as_deref(),
        rr,
        c.relu,
        c.profile,
    )
    .unwrap();
    let rr = rr && c.profile == qlinear_reference::Profile::Fbgemm;
    let mut q = vec![0u8; m * k];
    let mut rows = Vec::with_capacity(m);
    let mut sums = Vec::with_capacity(m);
    for i in 0..m {
        let row = MatRef::dense(xin.row(i), 1, k).unwrap();
        // SAFETY: `available` checked the ISA; the output slice holds the row's k bytes.
        let (lo, hi) = unsafe { (d.min_max)(&row) }.unwrap();
        let qp = qlinear_reference::quantize::dynamic_qparams_from_min_max(lo, hi, rr);
        // SAFETY: as above.
        let s = unsafe { (d.quantize)(&row, qp.scale, qp.zero_point, &mut q[i * k..(i + 1) * k]) };
        rows.push(RowQParams {
            scale: qp.scale,
            zero_point: qp.zero_point,
        });
        sums.push(s[0].wrapping_sub(DynamicEpilogue::row_sum_adjustment(k, qp.zero_point)));
    }
    let buf = run(&q, k, &sums, &rows);
    check(&buf, &|i, j| want[i * n + j], "literal");

    // 2. Random row qparams on the case's bytes against `apply_row`.
    let rows = random_row_qparams(&mut rng, m);
    let sums: Vec<i32> = (0..m)
        .map(|i| {
            row_sum(&c.a[i * c.a_stride..i * c.a_stride + k])
                .wrapping_sub(DynamicEpilogue::row_sum_adjustment(k, rows[i].zero_point))
        })
        .collect();
    let buf = run(&c.a, c.a_stride, &sums, &rows);
    check(
        &buf,
        &|i, j| {
            let row = &c.a[i * c.a_stride..i * c.a_stride + k];
            let acc = row
                .iter()
                .zip(&c.w[j * k..(j + 1) * k])
                .fold(0i32, |s, (&x, &y)| s.wrapping_add(x as i32 * y as i32));
            let rs = if need_sums { sums[i] } else { 0 };
            epi.apply_row(acc, rs, Some(rows[i]), j)
        },
        "random qparams",
    );
}

const WHOLE: Split = Split { row: 0, panel: 0 };

pub(crate) fn descriptor(d: &KernelDesc) {
    let name = format!("{}/gemm_{}x{}c{}", d.isa, d.mr, d.layout.nr, d.layout.kr);
    assert_eq!(d.name, name);
    assert!(crate::kernels().iter().any(|k| k.name == d.name));
}

pub(crate) fn edge_static(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(1);
    for (m, k, n) in edge_shapes(d.mr, d.layout.nr, d.layout.kr) {
        let c = StaticCase::random(&mut rng, m, k, n);
        check_static(d, &c, WHOLE, rng.below(3));
    }
}

pub(crate) fn edge_dynamic(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(2);
    for (m, k, n) in edge_shapes(d.mr, d.layout.nr, d.layout.kr) {
        let c = StaticCase::random(&mut rng, m, k, n);
        check_dynamic(d, &c, WHOLE, rng.below(3));
        check_per_row(d, &c, WHOLE, rng.below(3));
    }
}

/// Activations 255 / weights -128 and 127 / zero points at the extremes over the
/// contract's longest K, plus K just around the kernels' blocks.
pub(crate) fn extreme(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(3);
    for &(m, k, n) in &[
        (5, 33_025, 19),
        (1, 33_025, 17),
        (4, 33_024, 16),
        (3, 4099, 33),
        (9, 17, 35),
    ] {
        for _ in 0..2 {
            let mut c = StaticCase::extreme(m, k, n, &mut rng);
            check_static(d, &c, WHOLE, 1);
            // All-255 activations too (extreme() leaves some zeros).
            c.a.iter_mut().for_each(|v| *v = 255);
            check_static(d, &c, WHOLE, 0);
            check_dynamic(d, &c, WHOLE, 2);
        }
    }
}

/// The test kit's edge-scale sweep (subnormal to `f32::MAX` scales, signed-zero and huge
/// biases) around the tile, static and dynamic.
pub(crate) fn edge_scales(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(5);
    let (mr, nr) = (d.mr, d.layout.nr);
    for (m, k, n) in [
        (1, 5, nr + 1),
        (mr + 1, 67, 2 * nr + 3),
        (2 * mr + 1, 300, nr - 1),
    ] {
        for c in edge_scale_sweep(&mut rng, m, k, n) {
            check_static(d, &c, WHOLE, 1);
            check_dynamic(d, &c, WHOLE, 2);
            check_per_row(d, &c, WHOLE, 1);
        }
    }
}

/// Row and panel splits of one call (the API's thread driver), strided in and out.
pub(crate) fn splits(d: &KernelDesc) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(4);
    // (13, 20_000, 20): rows blocks of 8 (ACT_BLOCK_BYTES / K), so a 4-row and a 1-row
    // tile in the second block.
    assert_eq!(crate::common::block_rows(20_000, 4), 8);
    for &(m, k, n) in &[
        (11, 45, 53),
        (7, 300, 70),
        (2, 9, 33),
        (13, 64, 16),
        (13, 20_000, 20),
    ] {
        for split in [
            Split { row: 1, panel: 1 },
            Split { row: 5, panel: 2 },
            Split { row: 3, panel: 0 },
        ] {
            let c = StaticCase::random(&mut rng, m, k, n);
            check_static(d, &c, split, 5);
            check_dynamic(d, &c, split, 3);
            check_per_row(d, &c, split, 2);
        }
    }
}

/// One proptest case: random shape and parameters, both outputs.
pub(crate) fn random(d: &KernelDesc, seed: u64, m: usize, k: usize, n: usize) {
    if !available(d) {
        return;
    }
    let mut rng = Rng::new(seed);
    let c = StaticCase::random(&mut rng, m, k, n);
    let split = Split {
        row: rng.below(m + 1),
        panel: rng.below(n.div_ceil(d.layout.nr) + 1),
    };
    check_static(d, &c, split, rng.below(4));
    check_dynamic(d, &c, split, rng.below(4));
    check_per_row(d, &c, split, rng.below(4));
}

/// The vector epilogues against the scalar `apply` on hostile values the layer tests can
/// not reach: NaN / infinite / huge / subnormal / -0.0 multipliers and biases, exact
/// rounding ties, accumulators at the i32 limits (wrapping), every `nc`.
#[test]
fn epilogues_match_apply_on_special_values() {
    use crate::common::Epilogue;
    use core::arch::aarch64::*;

    const SPECIAL: [f32; 12] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e30,
        -0.0,
        0.0,
        1e-45,
        0.5,
        -0.5,
        1.0,
        3.0e-3,
    ];
    let mut rng = Rng::new(99);
    let pick = |rng: &mut Rng| {
        if rng.coin() {
            SPECIAL[rng.below(SPECIAL.len())]
        } else {
            (rng.unit_f32() - 0.5) * 4.0
        }
    };
    for round in 0..400 {
        let n0 = 16 * (round % 3);
        let len = n0 + 16;
        let col_offset: Vec<i32> = (0..len).map(|_| rng.next_u64() as i32).collect();
        let row_zp: Vec<i32> = (0..len).map(|_| rng.range_i32(-128, 127)).collect();
        let stat = StaticEpilogue {
            col_offset: col_offset.clone(),
            row_zp: row_zp.clone(),
            bias_a: (0..len).map(|_| pick(&mut rng)).collect(),
            bias_b: (0..len).map(|_| pick(&mut rng)).collect(),
            mult: (0..len).map(|_| pick(&mut rng)).collect(),
            zp_y: rng.range_i32(0, 255),
            lo: 0,
            // Parameters here include NaN and infinities: never promise NaN-freedom.
            nan_free: false,
        };
        let stat = StaticEpilogue {
            lo: if rng.coin() { stat.zp_y } else { 0 },
            ..stat
        };
        let dynm = DynamicEpilogue {
            col_offset,
            row_zp,
            mult: (0..len).map(|_| pick(&mut rng)).collect(),
            bias: (0..len).map(|_| pick(&mut rng)).collect(),
            fused_bias: rng.coin(),
            relu: rng.coin(),
            col_sum: (0..len).map(|_| rng.next_u64() as i32).collect(),
            weight_scale: (0..len).map(|_| pick(&mut rng)).collect(),
        };
        // Per-row qparams for the per-row store of the same row: special scales too.
        let row_q = RowQParams {
            scale: pick(&mut rng),
            zero_point: rng.range_i32(0, 255),
        };
        let accs: Vec<i32> = (0..16)
            .map(|j| match (round + j) % 5 {
                0 => i32::MAX - rng.below(3) as i32,
                1 => i32::MIN + rng.below(3) as i32,
                // Small values: exact ties of y = acc * 0.5 appear often.
                2 => rng.range_i32(-9, 9),
                _ => rng.next_u64() as i32,
            })
            .collect();
        let row_sum = if rng.coin() { 0 } else { rng.next_u64() as i32 };
        let nc = 1 + rng.below(16);
        // SAFETY: NEON is baseline on aarch64; the arrays hold n0 + 16 entries; the output
        // buffers have 16 elements after n0.
        let (got_u8, got_f32, got_per_row) = unsafe {
            let acc = [0, 4, 8, 12].map(|q| vld1q_s32(accs[q..].as_ptr()));
            let mut o8 = vec![0xA5u8; len + 16];
            let mut of = vec![f32::from_bits(CANARY_F32); len + 16];
            let mut opr = vec![f32::from_bits(CANARY_F32); len + 16];
            stat.store_row(&acc, row_sum, None, n0, nc, o8.as_mut_ptr());
            dynm.store_row(&acc, row_sum, None, n0, nc, of.as_mut_ptr());
            dynm.store_row(&acc, row_sum, Some(row_q), n0, nc, opr.as_mut_ptr());
            (o8, of, opr)
        };
        for j in 0..len + 16 {
            if j >= n0 && j < n0 + nc {
                let n = j;
                let a = accs[j - n0];
                assert_eq!(
                    got_u8[j],
                    stat.apply(a, row_sum, n),
                    "static col {n} {stat:?}"
                );
                assert_eq!(
                    got_f32[j].to_bits(),
                    dynm.apply(a, row_sum, n).to_bits(),
                    "dynamic col {n} {dynm:?}"
                );
                assert_eq!(
                    got_per_row[j].to_bits(),
                    dynm.apply_row(a, row_sum, Some(row_q), n).to_bits(),
                    "per-row col {n} {row_q:?} {dynm:?}"
                );
            } else {
                assert_eq!(
                    got_per_row[j].to_bits(),
                    CANARY_F32,
                    "per-row stray write at {j}"
                );
                assert_eq!(got_u8[j], 0xA5, "static stray write at {j}");
                assert_eq!(
                    got_f32[j].to_bits(),
                    CANARY_F32,
                    "dynamic stray write at {j}"
                );
            }
        }
    }
}
