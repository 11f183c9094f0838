//! Kernel-level tests, generated for every kernel of the registry: the kernel's entry
//! points are called directly through its [`KernelDesc`] (no API, no driver), on the
//! reference packer's output and the reference's folded epilogues, for the edge
//! catalogue of its tile sizes, whole and split into column ranges, and compared bit
//! for bit with the literal oracle. (The API-level suite in `qlinear/tests` covers
//! threading, views and the conformance file on top of this.)

// Test code: telling the person running the tests about a skipped kernel is the point.
#![allow(clippy::print_stderr)]

use qlinear_reference::contract::{
    DynamicEpilogue, GemmArgs, KernelDesc, RowQParams, StaticEpilogue,
};
use qlinear_reference::testkit::{
    edge_scale_sweep, per_row_input, random_row_qparams, Rng, StaticCase,
};
use qlinear_reference::{pack, MatRef};

fn required(name: &str) -> bool {
    std::env::var("QLINEAR_REQUIRE")
        .is_ok_and(|v| v.split(',').any(|s| s.trim() == "all" || s.trim() == name))
}

/// The kernel's own packer (when it has one) writes exactly the portable packer's bytes.
fn check_packer(desc: &KernelDesc, c: &StaticCase) {
    let Some(fast) = desc.pack_panel else {
        return;
    };
    let layout = desc.layout;
    let (n, k) = (c.n, c.k);
    let mut got = vec![0x5Au8; layout.panel_bytes(k)];
    let mut want = vec![0u8; layout.panel_bytes(k)];
    let mut sums = vec![0x5A5A_5A5Ai32; layout.nr];
    let mut want_sums = pack::column_sums(&c.w, n, k);
    want_sums.resize(layout.n_padded(n), 0);
    for p in 0..layout.n_padded(n) / layout.nr {
        pack::pack_panel(&c.w, n, k, layout, p, &mut want);
        // SAFETY: the kernel's ISA is supported (checked by the caller); `w` is n x k,
        // `got` one panel, `sums` nr values, p < n_pad / nr.
        unsafe { fast(&c.w, n, k, p, &mut got, &mut sums) };
        assert_eq!(got, want, "{} packer: n={n} k={k} panel {p}", desc.name);
        let nr = layout.nr;
        assert_eq!(
            sums,
            want_sums[p * nr..(p + 1) * nr],
            "{} column sums: n={n} k={k} panel {p}",
            desc.name
        );
    }
}

/// Runs one static and one dynamic case on `desc` over columns `[n_begin, n_end)`.
fn check_case(desc: &KernelDesc, c: &StaticCase, n_begin: usize, n_end: usize) {
    let (m, k, n) = (c.m, c.k, c.n);
    let layout = desc.layout;
    let packed = pack::pack(&c.w, n, k, layout);
    let mut col_sums = pack::column_sums(&c.w, n, k);
    let n_pad = layout.n_padded(n);
    let a = MatRef::new(&c.a, m, k, c.a_stride).unwrap();
    let row_sums: Vec<i32> = (0..m).map(|i| pack::row_sum(a.row(i))).collect();
    let rs = |sums: &[i32]| {
        if c.wq.all_zero_points_zero() {
            std::ptr::null()
        } else {
            sums.as_ptr()
        }
    };

    // Static.
    let want = c.oracle(&a).unwrap();
    let epi = StaticEpilogue::new(
        c.profile,
        c.x,
        &c.wq,
        &col_sums,
        k,
        c.bias.as_deref(),
        c.y,
        c.relu,
        n_pad,
    );
    let mut out = vec![0xA5u8; m * n];
    let args = GemmArgs {
        a: c.a.as_ptr(),
        a_stride: c.a_stride,
        m,
        k,
        packed: packed.as_ptr(),
        n_begin,
        n_end,
        row_sums: rs(&row_sums),
        row_qparams: std::ptr::null(),
        out: out.as_mut_ptr(),
        out_stride: n,
    };
    // SAFETY: the test only runs when `is_supported()`; `a` covers m rows of k bytes
    // with its stride, `packed` is the kernel layout's packing of all n columns, the
    // epilogue is padded to whole panels, `out` is m x n, and [n_begin, n_end) starts
    // on a panel boundary.
    unsafe { (desc.gemm_u8)(&args, &epi) };
    for i in 0..m {
        for j in 0..n {
            let expect = if (n_begin..n_end).contains(&j) {
                want[i * n + j]
            } else {
                0xA5
            };
            assert_eq!(
                out[i * n + j],
                expect,
                "{} static m={m} k={k} n={n} cols {n_begin}..{n_end}: out[{i},{j}]",
                desc.name
            );
        }
    }

    // Dynamic, on an f32 input derived from the case's bytes.
    let xf = c.dynamic_input();
    let xin = MatRef::new(&xf, m, k, c.a_stride).unwrap();
    let want = qlinear_reference::dynamic_linear(
        &xin,
        &c.w,
        n,
        &c.wq,
        c.bias.as_deref(),
        false,
        c.relu,
        c.profile,
    )
    .unwrap();
    let qp = qlinear_reference::choose_dynamic_qparams(&xin, false).unwrap();
    let mut q = vec![0u8; m * k];
    // SAFETY: the kernel's ISA is supported (checked by the caller).
    let dyn_row_sums = unsafe { (desc.quantize)(&xin, qp.scale, qp.zero_point, &mut q) };
    assert_eq!(
        q,
        qlinear_reference::quantize_activations(&xin, qp.scale, qp.zero_point)
    );
    col_sums.truncate(n);
    let epi = DynamicEpilogue::new(
        c.profile,
        qp.scale,
        qp.zero_point,
        &c.wq,
        &col_sums,
        k,
        c.bias.as_deref(),
        c.relu,
        n_pad,
    );
    let mut outf = vec![f32::from_bits(0x7FC0_1234); m * n];
    let args = GemmArgs {
        a: q.as_ptr(),
        a_stride: k,
        m,
        k,
        packed: packed.as_ptr(),
        n_begin,
        n_end,
        row_sums: rs(&dyn_row_sums),
        row_qparams: std::ptr::null(),
        out: outf.as_mut_ptr(),
        out_stride: n,
    };
    // SAFETY: as for the static call, with the dense quantized input.
    unsafe { (desc.gemm_f32)(&args, &epi) };
    for i in 0..m {
        for j in 0..n {
            let expect = if (n_begin..n_end).contains(&j) {
                want[i * n + j]
            } else {
                f32::from_bits(0x7FC0_1234)
            };
            assert_eq!(
                outf[i * n + j].to_bits(),
                expect.to_bits(),
                "{} dynamic m={m} k={k} n={n} cols {n_begin}..{n_end}: out[{i},{j}]",
                desc.name
            );
        }
    }
}

/// Calls `desc`'s dynamic entry on rows `[0, cut)` and `[cut, m)` separately (as the
/// driver's row pieces do: `a`, `out`, `row_sums` and `row_qparams` offset together).
fn call_f32_split(desc: &KernelDesc, args: GemmArgs<f32>, epi: &DynamicEpilogue, cut: usize) {
    for (r0, r1) in [(0, cut.min(args.m)), (cut.min(args.m), args.m)] {
        if r0 == r1 {
            continue;
        }
        let mut c = args;
        c.m = r1 - r0;
        c.a = args.a.wrapping_add(r0 * args.a_stride);
        c.out = args.out.wrapping_add(r0 * args.out_stride);
        if !args.row_sums.is_null() {
            c.row_sums = args.row_sums.wrapping_add(r0);
        }
        if !args.row_qparams.is_null() {
            c.row_qparams = args.row_qparams.wrapping_add(r0);
        }
        // SAFETY: the ISA is supported (checked by the caller); the piece's rows are
        // inside the caller's buffers, which satisfy the kernel contract.
        unsafe { (desc.gemm_f32)(&c, epi) };
    }
}

/// Per-row dynamic mode on `desc` over columns `[n_begin, n_end)`, split into two row
/// pieces at a case-dependent row:
///
/// 1. an input whose rows differ in magnitude, quantized row by row with the kernel's
///    own `min_max` / `quantize`, against the literal `dynamic_linear_per_row`;
/// 2. the case's own bytes with random per-row qparams (subnormal to huge scales, zero
///    points 0 and 255) against the scalar `DynamicEpilogue::apply_row`.
fn check_per_row(desc: &KernelDesc, c: &StaticCase, n_begin: usize, n_end: usize) {
    let (m, k, n) = (c.m, c.k, c.n);
    let layout = desc.layout;
    let packed = pack::pack(&c.w, n, k, layout);
    let col_sums = pack::column_sums(&c.w, n, k);
    let n_pad = layout.n_padded(n);
    let mut rng = Rng::new((m * 1_000_003 + k * 1009 + n * 31 + n_begin) as u64);
    let cut = rng.below(m + 1);
    let need_sums = !c.wq.all_zero_points_zero();
    let epi = DynamicEpilogue::new_per_row(
        c.profile,
        &c.wq,
        &col_sums,
        k,
        c.bias.as_deref(),
        c.relu,
        n_pad,
    );
    let canary = f32::from_bits(0x7FC0_1234);

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
        // SAFETY: the kernel's ISA is supported (checked by the caller); the output
        // slice holds the row's k bytes.
        let (lo, hi) = unsafe { (desc.min_max)(&row) }.unwrap();
        let qp = qlinear_reference::quantize::dynamic_qparams_from_min_max(lo, hi, rr);
        // SAFETY: as above.
        let s =
            unsafe { (desc.quantize)(&row, qp.scale, qp.zero_point, &mut q[i * k..(i + 1) * k]) };
        rows.push(RowQParams {
            scale: qp.scale,
            zero_point: qp.zero_point,
        });
        sums.push(s[0].wrapping_sub(DynamicEpilogue::row_sum_adjustment(k, qp.zero_point)));
    }
    let mut outf = vec![canary; m * n];
    let args = GemmArgs {
        a: q.as_ptr(),
        a_stride: k,
        m,
        k,
        packed: packed.as_ptr(),
        n_begin,
        n_end,
        row_sums: if need_sums {
            sums.as_ptr()
        } else {
            std::ptr::null()
        },
        row_qparams: rows.as_ptr(),
        out: outf.as_mut_ptr(),
        out_stride: n,
    };
    call_f32_split(desc, args, &epi, cut);
    for i in 0..m {
        for j in 0..n {
            let expect = if (n_begin..n_end).contains(&j) {
                want[i * n + j]
            } else {
                canary
            };
            assert_eq!(
                outf[i * n + j].to_bits(),
                expect.to_bits(),
                "{} per-row m={m} k={k} n={n} cols {n_begin}..{n_end} cut {cut}: out[{i},{j}]",
                desc.name
            );
        }
    }

    // 2. Random row qparams on the case's bytes against `apply_row`.
    let rows = random_row_qparams(&mut rng, m);
    let a = MatRef::new(&c.a, m, k, c.a_stride).unwrap();
    let sums: Vec<i32> = (0..m)
        .map(|i| {
            pack::row_sum(a.row(i))
                .wrapping_sub(DynamicEpilogue::row_sum_adjustment(k, rows[i].zero_point))
        })
        .collect();
    let out_stride = n + 3;
    let mut outf = vec![canary; m * out_stride];
    let args = GemmArgs {
        a: c.a.as_ptr(),
        a_stride: c.a_stride,
        m,
        k,
        packed: packed.as_ptr(),
        n_begin,
        n_end,
        row_sums: if need_sums {
            sums.as_ptr()
        } else {
            std::ptr::null()
        },
        row_qparams: rows.as_ptr(),
        out: outf.as_mut_ptr(),
        out_stride,
    };
    call_f32_split(desc, args, &epi, cut);
    for i in 0..m {
        for j in 0..out_stride {
            let expect = if (n_begin..n_end).contains(&j) {
                let acc = a
                    .row(i)
                    .iter()
                    .zip(&c.w[j * k..(j + 1) * k])
                    .fold(0i32, |s, (&x, &y)| s.wrapping_add(x as i32 * y as i32));
                let rs = if need_sums { sums[i] } else { 0 };
                epi.apply_row(acc, rs, Some(rows[i]), j)
            } else {
                canary
            };
            assert_eq!(
                outf[i * out_stride + j].to_bits(),
                expect.to_bits(),
                "{} per-row (random qparams {:?}) m={m} k={k} n={n} cols {n_begin}..{n_end}: out[{i},{j}]",
                desc.name,
                rows[i]
            );
        }
    }
}

/// The shapes `check_kernel` runs: the whole edge catalogue of the tile.
#[cfg(not(miri))]
fn shapes(mr: usize, nr: usize, kr: usize) -> Vec<(usize, usize, usize)> {
    qlinear_reference::testkit::edge_shapes(mr, nr, kr)
}

/// Under Miri (every operation interpreted, orders of magnitude slower) a subset of the
/// catalogue: every partial M up to `mr + 1`, K around the k-group (below, at, above,
/// and a tail after whole groups), N around the panel width, and one shape with two row
/// tiles, three panels and a K tail (so the column-range splits run too).
#[cfg(miri)]
fn shapes(mr: usize, nr: usize, kr: usize) -> Vec<(usize, usize, usize)> {
    let ks = [1, kr - 1, kr, kr + 1, 2 * kr + 3];
    let ns = [1, nr - 1, nr, nr + 1, 2 * nr + 3];
    let mut shapes: Vec<_> = (1..=mr + 1)
        .map(|m| (m, ks[m % ks.len()], ns[m % ns.len()]))
        .collect();
    shapes.push((mr + 1, 2 * kr + 3, 2 * nr + 3));
    shapes
}

/// The shapes of the edge-scale sweep.
#[cfg(not(miri))]
fn sweep_shapes(mr: usize, nr: usize, _kr: usize) -> [(usize, usize, usize); 3] {
    [
        (1, 5, nr + 1),
        (mr + 1, 67, 2 * nr + 3),
        (2 * mr + 1, 300, nr - 1),
    ]
}

/// Under Miri, one small shape of the edge-scale sweep (two row tiles, a K tail, a
/// second panel with one valid column).
#[cfg(miri)]
fn sweep_shapes(mr: usize, nr: usize, kr: usize) -> [(usize, usize, usize); 1] {
    [(mr + 1, kr + 1, nr + 1)]
}

/// One shape on `desc` (whose ISA the caller checked): a random and an extreme case,
/// static and dynamic (per tensor and per row), over all columns and, past one panel,
/// over column ranges starting on panel boundaries (as threads get them); the kernel's
/// packer too. The cases' input rows end exactly at the end of their buffers.
pub(crate) fn check_shape(desc: &KernelDesc, rng: &mut Rng, m: usize, k: usize, n: usize) {
    let nr = desc.layout.nr;
    for variant in 0..2 {
        let c = if variant == 0 {
            StaticCase::random(rng, m, k, n)
        } else {
            StaticCase::extreme(m, k, n, rng)
        };
        check_packer(desc, &c);
        check_case(desc, &c, 0, n);
        check_per_row(desc, &c, 0, n);
        // A column range starting on an inner panel boundary, as threads get.
        if n > nr {
            check_case(desc, &c, nr, n);
            check_case(desc, &c, 0, nr);
            check_per_row(desc, &c, nr, n);
        }
    }
}

/// The edge catalogue of `desc`'s tile, random and extreme cases, whole and by column
/// ranges. Skips (with a message) when the CPU lacks the ISA, unless `QLINEAR_REQUIRE`
/// lists the kernel's backend.
pub(crate) fn check_kernel(desc: &KernelDesc) {
    if !(desc.is_supported)() {
        assert!(
            !required(desc.isa.name()),
            "QLINEAR_REQUIRE lists {}, which this CPU lacks",
            desc.isa
        );
        eprintln!("SKIP {}: not supported on this CPU", desc.name);
        return;
    }
    let mut rng = Rng::new(0x5eed ^ desc.name.len() as u64);
    let nr = desc.layout.nr;
    for (m, k, n) in shapes(desc.mr, nr, desc.layout.kr) {
        check_shape(desc, &mut rng, m, k, n);
    }
    // Scales from the smallest subnormal to f32::MAX, signed-zero and huge biases.
    for (m, k, n) in sweep_shapes(desc.mr, nr, desc.layout.kr) {
        for c in edge_scale_sweep(&mut rng, m, k, n) {
            check_case(desc, &c, 0, n);
            check_per_row(desc, &c, 0, n);
        }
    }
}
