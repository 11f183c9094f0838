//! Kernel-level tests, generated for every registered kernel by `kernel_registry!`: thin
//! entry points over the shared harness of [`qlinear_reference::testkit::kernel`], which
//! calls each kernel entry directly (no API layer) on weights packed by the generic
//! packer into the kernel's layout, with epilogues folded by the reference crate, and
//! compares the outputs bit for bit with the literal oracle and the scalar epilogues.
//! Outputs sit in a buffer with canary bytes before, after and between rows (the row
//! stride exceeds `n`), and calls are split over rows and panels as the API's thread
//! driver may split them. The NEON epilogues' own test on special values stays here.
#![allow(clippy::print_stderr)]

use qlinear_reference::contract::{DynamicEpilogue, KernelDesc, RowQParams, StaticEpilogue};
use qlinear_reference::testkit::kernel::{self as harness, CANARY_F32};
use qlinear_reference::testkit::Rng;

pub(crate) use harness::{edge_dynamic, edge_scales, edge_static, extreme, random};

/// The descriptor's name follows its tile and the kernel is registered.
pub(crate) fn descriptor(d: &KernelDesc) {
    let name = format!("{}/gemm_{}x{}c{}", d.isa, d.mr, d.layout.nr, d.layout.kr);
    assert_eq!(d.name, name);
    assert!(crate::kernels().iter().any(|k| k.name == d.name));
}

/// Row and panel splits of one call (the API's thread driver), strided in and out
/// ([`harness::splits`]), on shapes around this crate's row blocking.
pub(crate) fn splits(d: &KernelDesc) {
    // (13, 20_000, 20): rows blocks of 8 (ACT_BLOCK_BYTES / K), so a 4-row and a 1-row
    // tile in the second block.
    assert_eq!(crate::common::block_rows(20_000, 4), 8);
    harness::splits(
        d,
        &[
            (11, 45, 53),
            (7, 300, 70),
            (2, 9, 33),
            (13, 64, 16),
            (13, 20_000, 20),
        ],
    );
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
