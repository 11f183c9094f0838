//! Checks shared by the kernel-set tests (`kernel_sets.rs`), the AMX tests on
//! emulated tile instructions (`amx_emulated.rs`) and the dynamic row-piece tests
//! (`dynamic_row_pieces.rs`): one random case of 130 rows, and the
//! static and dynamic outputs of a layer for its first `m` rows against the reference
//! oracle, bit for bit (`to_bits` for f32).
#![allow(dead_code)] // each test file uses its own subset

use qlinear::{
    Backend, DynamicLinear, InputQuantization, Linear, MatMut, MatRef, PackedWeights,
    QuantizedWeight, WeightQParams,
};
use qlinear_reference::testkit::{Rng, StaticCase};

pub const K: usize = 67;
pub const N: usize = 70;

/// The row counts every check runs.
pub fn ms() -> Vec<usize> {
    (1..=40).chain([64, 130]).collect()
}

/// Thread counts for `m`: 1 always; 2 and 7 on a spread of M (row and column splits).
pub fn threads_for(m: usize) -> &'static [usize] {
    if [1, 2, 8, 9, 33, 64, 130].contains(&m) {
        &[1, 2, 7]
    } else {
        &[1]
    }
}

/// One random case with `max_m` rows (checks use its first `m`), and an f32 input.
pub struct Case {
    pub c: StaticCase,
    pub xf: Vec<f32>,
}

pub fn case(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let max_m = 130;
    let mut c = StaticCase::random(&mut rng, max_m, K, N);
    c.bias = Some((0..N).map(|j| (j as f32 - 30.0) * 0.37).collect());
    // Rows of very different magnitudes, so per-row and per-tensor quantization differ.
    let xf = (0..max_m * K)
        .map(|i| {
            let row = i / K;
            (i as f32 * 0.713).sin() * (1.0 + (row % 7) as f32 * 10.0)
        })
        .collect();
    Case { c, xf }
}

pub fn weight(c: &StaticCase) -> QuantizedWeight {
    QuantizedWeight::new(c.w.clone(), c.n, c.k, c.wq.clone()).expect("valid weight")
}

/// Static output of `layer` for the first `m` rows against the oracle.
pub fn check_static(layer: &Linear, c: &StaticCase, m: usize, threads: usize, what: &str) {
    let a = MatRef::new(&c.a, m, c.k, c.a_stride).expect("input view");
    let want = c.oracle(&a).expect("oracle");
    let mut got = vec![0xA5u8; m * c.n];
    layer
        .forward_with_threads(a, MatMut::dense(&mut got, m, c.n).unwrap(), threads)
        .expect("forward");
    assert!(
        got == want,
        "{what}: static m={m} threads={threads} kernel {} differs from the reference",
        layer.kernel_name_for(m)
    );
}

/// Dynamic output of `layer` for the first `m` rows against the oracle.
pub fn check_dynamic(layer: &DynamicLinear, t: &Case, m: usize, threads: usize, what: &str) {
    let c = &t.c;
    let x = MatRef::dense(&t.xf[..m * c.k], m, c.k).unwrap();
    check_dynamic_view(layer, &x, (&c.w, &c.wq, c.bias.as_deref()), threads, what);
}

/// Dynamic output of `layer` on the input view `x` against the oracle of the layer's
/// weight `(w, wq, bias)`, bit for bit.
pub fn check_dynamic_view(
    layer: &DynamicLinear,
    x: &MatRef<'_, f32>,
    (w, wq, bias): (&[i8], &WeightQParams, Option<&[f32]>),
    threads: usize,
    what: &str,
) {
    let (m, n) = (x.rows(), layer.packed().out_features());
    let literal = match layer.input_quantization() {
        InputQuantization::PerRow => qlinear_reference::dynamic_linear_per_row,
        InputQuantization::PerTensor => qlinear_reference::dynamic_linear,
    };
    let want = literal(
        x,
        w,
        n,
        wq,
        bias,
        layer.reduce_range(),
        layer.relu(),
        layer.profile(),
    )
    .expect("oracle");
    let mut got = vec![f32::NAN; m * n];
    layer
        .forward_with_threads(*x, MatMut::dense(&mut got, m, n).unwrap(), threads)
        .expect("forward");
    let same = got
        .iter()
        .zip(&want)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(
        same,
        "{what}: dynamic {:?} m={m} threads={threads} kernel {} differs from the reference",
        layer.input_quantization(),
        layer.kernel_name_for(m)
    );
}

/// The three layers every check runs, all from one packing: static, dynamic per-tensor
/// and dynamic per-row, with the case's bias, ReLU and profile.
pub struct Layers {
    pub fixed: Linear,
    pub per_tensor: DynamicLinear,
    pub per_row: DynamicLinear,
}

pub fn layers(c: &StaticCase, packed: &PackedWeights, backend: Backend) -> Layers {
    let fixed = Linear::from_packed(packed.clone(), c.x, c.y)
        .maybe_bias(c.bias.clone())
        .relu(c.relu)
        .profile(c.profile)
        .backend(backend)
        .build()
        .expect("static layer");
    let dynamic = |mode| {
        DynamicLinear::from_packed(packed.clone())
            .maybe_bias(c.bias.clone())
            .relu(c.relu)
            .profile(c.profile)
            .backend(backend)
            .input_quantization(mode)
            .build()
            .expect("dynamic layer")
    };
    Layers {
        fixed,
        per_tensor: dynamic(InputQuantization::PerTensor),
        per_row: dynamic(InputQuantization::PerRow),
    }
}
