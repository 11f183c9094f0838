//! Thread safety: one layer shared by several OS threads (`Arc<Linear>`,
//! `Arc<DynamicLinear>`), each calling `forward` concurrently with its own inputs and its
//! own thread count, gives exactly the serial results on every backend. The dynamic
//! layer's per-thread scratch and the driver's pool use are what this exercises.

use std::sync::Arc;

use qlinear::{
    available_backends, ActQParams, DynamicLinear, Linear, MatMut, MatRef, QuantizedWeight,
    WeightQParams,
};
use qlinear_reference::testkit::Rng;

const CALLERS: usize = 6;

#[test]
fn shared_layers_agree_with_serial_results() {
    let (k, n) = (300, 70);
    let mut rng = Rng::new(6);
    let weight = QuantizedWeight::new(
        rng.i8s(n * k),
        n,
        k,
        WeightQParams::PerChannel {
            scales: (0..n).map(|_| rng.log_uniform(1e-3, 1e-1)).collect(),
            zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
        },
    )
    .unwrap();
    // Inputs of different heights per caller (GEMV, small M, row-split M).
    let rows = |c: usize| [1, 5, 70, 3, 129, 8][c % 6];
    let inputs: Vec<Vec<u8>> = (0..CALLERS).map(|c| rng.bytes(rows(c) * k)).collect();
    let floats: Vec<Vec<f32>> = (0..CALLERS).map(|c| rng.f32s(rows(c) * k, 3.0)).collect();
    for b in available_backends() {
        let layer = Arc::new(
            Linear::builder(
                weight.clone(),
                ActQParams::new(0.02, 100).unwrap(),
                ActQParams::new(0.3, 60).unwrap(),
            )
            .bias(rng.f32s(n, 0.5))
            .backend(b)
            .build()
            .unwrap(),
        );
        let dynamic = Arc::new(
            DynamicLinear::builder(weight.clone())
                .backend(b)
                .build()
                .unwrap(),
        );
        let serial: Vec<(Vec<u8>, Vec<f32>)> = (0..CALLERS)
            .map(|c| {
                (
                    layer.forward_vec(&inputs[c], rows(c)).unwrap(),
                    dynamic.forward_vec(&floats[c], rows(c)).unwrap(),
                )
            })
            .collect();
        std::thread::scope(|s| {
            for c in 0..CALLERS {
                let (layer, dynamic) = (Arc::clone(&layer), Arc::clone(&dynamic));
                let (x, xf, want) = (&inputs[c], &floats[c], &serial[c]);
                s.spawn(move || {
                    let m = rows(c);
                    for round in 0..20 {
                        let threads = 1 + (c + round) % 3;
                        let mut y = vec![0u8; m * n];
                        layer
                            .forward_with_threads(
                                MatRef::dense(x, m, k).unwrap(),
                                MatMut::dense(&mut y, m, n).unwrap(),
                                threads,
                            )
                            .unwrap();
                        assert_eq!(y, want.0, "{b} caller {c} round {round} static");
                        let mut yf = vec![0f32; m * n];
                        dynamic
                            .forward_with_threads(
                                MatRef::dense(xf, m, k).unwrap(),
                                MatMut::dense(&mut yf, m, n).unwrap(),
                                threads,
                            )
                            .unwrap();
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&yf),
                            bits(&want.1),
                            "{b} caller {c} round {round} dynamic"
                        );
                    }
                });
            }
        });
    }
}
