//! Adversarial review of the per-row fold (issue 10) at the K limit: extreme rows
//! (constant positive, constant negative, alternating extremes, zeros) against
//! extreme weights and zero points, where `row_sum - K * zp_m` and `zp_m * col_sum`
//! are largest. The folded epilogue must equal the literal, and the literal must equal
//! `dynamic_linear` on each row alone.

use qlinear_reference::contract::DynamicEpilogue;
use qlinear_reference::testkit::folded_per_row;
use qlinear_reference::{
    dynamic_linear, dynamic_linear_per_row, pack, MatRef, Profile, WeightQParams, K_LIMIT,
};

#[test]
fn per_row_fold_at_the_k_limit() {
    let (m, k, n) = (4, K_LIMIT, 4);
    // Columns: all -128, all 127, alternating, all zero.
    let mut w = vec![0i8; n * k];
    for c in 0..k {
        w[c] = -128;
        w[k + c] = 127;
        w[2 * k + c] = if c % 2 == 0 { -128 } else { 127 };
    }
    let wq = WeightQParams::PerChannel {
        scales: vec![1e-3, 2.5e-2, 7e-1, 1e-5],
        zero_points: vec![127, -128, 0, -1],
    };
    let mut x = vec![0f32; m * k];
    for c in 0..k {
        x[c] = 3.0e4;
        x[k + c] = -1.5e-3;
        x[2 * k + c] = if c % 2 == 0 { 1e9 } else { -1e-9 };
    }
    let xv = MatRef::dense(&x, m, k).unwrap();
    let col_sums = pack::column_sums(&w, n, k);
    for profile in [Profile::Fbgemm, Profile::Qnnpack] {
        for bias in [None, Some(vec![0.5f32, -0.25, 1e6, -0.0])] {
            let want =
                dynamic_linear_per_row(&xv, &w, n, &wq, bias.as_deref(), true, false, profile)
                    .unwrap();
            for i in 0..m {
                let row = MatRef::dense(xv.row(i), 1, k).unwrap();
                let alone = dynamic_linear(&row, &w, n, &wq, bias.as_deref(), true, false, profile)
                    .unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&want[i * n..(i + 1) * n]), bits(&alone), "row {i}");
            }
            let epi = DynamicEpilogue::new_per_row(
                profile,
                &wq,
                &col_sums,
                k,
                bias.as_deref(),
                false,
                16,
            );
            let rr = profile == Profile::Fbgemm;
            for i in 0..m {
                let row = MatRef::dense(xv.row(i), 1, k).unwrap();
                let folded = folded_per_row(&epi, &row, &w, n, rr);
                for (j, &got) in folded.iter().enumerate() {
                    assert_eq!(
                        got.to_bits(),
                        want[i * n + j].to_bits(),
                        "{profile:?} ({i}, {j}): folded {got:e} literal {:e}",
                        want[i * n + j]
                    );
                }
            }
        }
    }
}
