//! A dynamic int8 layer (`torch.ao.nn.quantized.dynamic.Linear`): f32 in, f32 out.
//!
//! Builds a 512 -> 128 layer from f32 weights twice, with per-tensor and per-channel
//! weight observers, runs a batch of 16 rows, and compares both with the f32 product
//! they approximate. Then it checks the property qlinear exists for: every backend this
//! CPU runs gives the same bits.
//!
//! ```sh
//! cargo run --release -p qlinear --example dynamic
//! ```

use qlinear::prelude::*;

const IN: usize = 512;
const OUT: usize = 128;
const ROWS: usize = 16;

/// Deterministic pseudo-random values in [-1, 1) (no `rand` dependency needed).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `x @ w^T + b` in f32, the computation the int8 layer approximates.
fn float_linear(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; ROWS * OUT];
    for r in 0..ROWS {
        for o in 0..OUT {
            let row = &x[r * IN..(r + 1) * IN];
            let col = &w[o * IN..(o + 1) * IN];
            y[r * OUT + o] = row.iter().zip(col).map(|(a, b)| a * b).sum::<f32>() + b[o];
        }
    }
    y
}

/// The error of the weakest channels: `sum |got - want| / sum |want|` over the output
/// channels with the smallest gain (every 8th, starting at 0).
fn weak_channel_error(got: &[f32], want: &[f32]) -> f32 {
    let (mut err, mut mag) = (0f32, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if (i % OUT).is_multiple_of(8) {
            err += (g - w).abs();
            mag += w.abs();
        }
    }
    err / mag
}

fn main() -> Result<(), qlinear::Error> {
    // Output channels of different magnitudes: where per-channel scales pay off.
    let mut weight = values(OUT * IN, 1);
    for (o, row) in weight.chunks_mut(IN).enumerate() {
        let gain = 0.05 + (o % 8) as f32 * 0.25;
        row.iter_mut().for_each(|v| *v *= gain);
    }
    let bias = values(OUT, 2);
    let x = values(ROWS * IN, 3);
    let want = float_linear(&x, &weight, &bias);

    for (label, observer) in [
        ("per-tensor ", Observer::PER_TENSOR_SYMMETRIC),
        ("per-channel", Observer::PER_CHANNEL_SYMMETRIC),
    ] {
        let layer = DynamicLinear::from_float(&weight, OUT, IN, observer)?
            .bias(bias.clone())
            .build()?;
        let got = layer.forward_vec(&x, ROWS)?;
        println!(
            "{label} weights on {}: relative error of the weakest channels {:.4}",
            layer.kernel_name(),
            weak_channel_error(&got, &want)
        );
    }

    // The same layer on every backend this CPU runs: identical bits, always.
    let mut first: Option<(Backend, Vec<u32>)> = None;
    for backend in qlinear::available_backends() {
        let layer = DynamicLinear::from_float(&weight, OUT, IN, Observer::PER_CHANNEL_SYMMETRIC)?
            .bias(bias.clone())
            .backend(backend)
            .build()?;
        let bits: Vec<u32> = layer
            .forward_vec(&x, ROWS)?
            .iter()
            .map(|v| v.to_bits())
            .collect();
        match &first {
            None => first = Some((backend, bits)),
            Some((b0, bits0)) => {
                assert_eq!(&bits, bits0, "{backend} differs from {b0}");
                println!("{backend}: bit-identical to {b0}");
            }
        }
    }
    Ok(())
}
