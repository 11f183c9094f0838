//! Per-row dynamic quantization: the literal `dynamic_linear_per_row` is `dynamic_linear`
//! on each row alone, and the folded per-row epilogue (`DynamicEpilogue::new_per_row` +
//! `apply_row` on plain `sum q*w`) reproduces it bit for bit.

use qlinear_reference::contract::DynamicEpilogue;
use qlinear_reference::testkit::{folded_per_row, per_row_input, random_weight_qparams, Rng};
use qlinear_reference::{
    dynamic_linear, dynamic_linear_per_row, pack, Error, MatRef, Profile, WeightQParams,
};

struct Case {
    stride: usize,
    x: Vec<f32>,
    w: Vec<i8>,
    wq: WeightQParams,
    bias: Option<Vec<f32>>,
    reduce_range: bool,
    relu: bool,
    profile: Profile,
}

fn case(rng: &mut Rng, m: usize, k: usize, n: usize) -> Case {
    let stride = k + rng.below(3);
    let wq = random_weight_qparams(rng, n);
    Case {
        stride,
        x: per_row_input(rng, m, k, stride),
        w: rng.i8s(n * k),
        wq,
        bias: rng.coin().then(|| rng.f32s(n, 3.0)),
        reduce_range: rng.coin(),
        relu: rng.coin(),
        profile: if rng.coin() {
            Profile::Fbgemm
        } else {
            Profile::Qnnpack
        },
    }
}

/// The signature of `dynamic_linear` and `dynamic_linear_per_row`.
type Layer = fn(
    &MatRef<'_, f32>,
    &[i8],
    usize,
    &WeightQParams,
    Option<&[f32]>,
    bool,
    bool,
    Profile,
) -> Result<Vec<f32>, Error>;

impl Case {
    /// `layer` on `x` with this case's weights (`n` outputs) and settings.
    fn run(&self, layer: Layer, x: &MatRef<'_, f32>, n: usize) -> Vec<f32> {
        layer(
            x,
            &self.w,
            n,
            &self.wq,
            self.bias.as_deref(),
            self.reduce_range,
            self.relu,
            self.profile,
        )
        .unwrap()
    }
}

fn shapes() -> Vec<(usize, usize, usize)> {
    let mut s = Vec::new();
    for &m in &[1, 2, 3, 7] {
        for &k in &[1, 3, 4, 63, 65] {
            for &n in &[1, 15, 17] {
                s.push((m, k, n));
            }
        }
    }
    s
}

#[test]
fn per_row_equals_per_tensor_on_each_row_alone() {
    let mut rng = Rng::new(0xB0B);
    for (m, k, n) in shapes() {
        for _ in 0..3 {
            let c = case(&mut rng, m, k, n);
            let xv = MatRef::new(&c.x, m, k, c.stride).unwrap();
            let got = c.run(dynamic_linear_per_row, &xv, n);
            for i in 0..m {
                let row = MatRef::dense(xv.row(i), 1, k).unwrap();
                let want = c.run(dynamic_linear, &row, n);
                let got_bits: Vec<u32> = got[i * n..(i + 1) * n]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got_bits, want_bits, "row {i} of {m}x{k}x{n}");
            }
        }
    }
}

#[test]
fn folded_per_row_epilogue_equals_literal() {
    let mut rng = Rng::new(0xF01D);
    for (m, k, n) in shapes() {
        for _ in 0..3 {
            let c = case(&mut rng, m, k, n);
            let xv = MatRef::new(&c.x, m, k, c.stride).unwrap();
            let want = c.run(dynamic_linear_per_row, &xv, n);
            let col_sums = pack::column_sums(&c.w, n, k);
            let n_pad = n.div_ceil(16) * 16;
            let epi = DynamicEpilogue::new_per_row(
                c.profile,
                &c.wq,
                &col_sums,
                k,
                c.bias.as_deref(),
                c.relu,
                n_pad,
            );
            assert!(epi.is_per_row());
            assert!(epi.col_offset.iter().all(|&o| o == 0));
            let rr = c.reduce_range && c.profile == Profile::Fbgemm;
            for i in 0..m {
                let row = MatRef::dense(xv.row(i), 1, k).unwrap();
                let folded = folded_per_row(&epi, &row, &c.w, n, rr);
                for (j, &got) in folded.iter().enumerate() {
                    assert_eq!(
                        got.to_bits(),
                        want[i * n + j].to_bits(),
                        "({i}, {j}) of {m}x{k}x{n}: folded {got:e} literal {:e}",
                        want[i * n + j]
                    );
                }
            }
        }
    }
}

#[test]
fn per_row_nan_reports_flat_index() {
    let (m, k, n) = (7, 5, 3);
    let mut x: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.25 - 3.0).collect();
    x[5 * k + 2] = f32::NAN;
    x[6 * k + 1] = f32::INFINITY;
    let xv = MatRef::dense(&x, m, k).unwrap();
    let w = vec![1i8; n * k];
    let wq = WeightQParams::PerTensor {
        scale: 0.01,
        zero_point: 3,
    };
    let err =
        dynamic_linear_per_row(&xv, &w, n, &wq, None, false, false, Profile::Fbgemm).unwrap_err();
    assert!(
        matches!(err, Error::NonFinite { index, .. } if index == 5 * k + 2),
        "{err:?}"
    );
}

#[test]
fn per_row_differs_from_per_tensor_when_ranges_differ() {
    let (m, k, n) = (2, 4, 2);
    let x = [0.001f32, -0.002, 0.003, 0.0005, 100.0, -50.0, 25.0, 3.0];
    let xv = MatRef::dense(&x, m, k).unwrap();
    let w = [10i8, -20, 30, 40, -50, 60, 70, -80];
    let wq = WeightQParams::PerTensor {
        scale: 0.01,
        zero_point: 0,
    };
    let a = dynamic_linear(&xv, &w, n, &wq, None, false, false, Profile::Fbgemm).unwrap();
    let b = dynamic_linear_per_row(&xv, &w, n, &wq, None, false, false, Profile::Fbgemm).unwrap();
    assert_ne!(a[..n], b[..n], "the small row must quantize differently");
    assert_eq!(a[n..], b[n..], "the row that sets the range is unchanged");
}
