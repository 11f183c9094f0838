//! A static int8 layer from an f32 one: torch's post-training static quantization
//! (QuantStub -> Linear/LinearReLU -> DeQuantStub) for one layer.
//!
//! 1. a float `LinearReLU` (256 -> 64) and some calibration batches;
//! 2. [`Calibrator`] observes the float input and output with torch's `MinMaxObserver`
//!    and builds the static layer (weights per channel, like torch's fbgemm qconfig);
//! 3. `forward_f32_vec` quantizes the input, runs the u8 layer and dequantizes the
//!    output; the result is compared with the float layer on held-out data;
//! 4. every backend this CPU runs gives the same output bits.
//!
//! ```sh
//! cargo run --release -p qlinear --example static_calibrated
//! ```

use qlinear::prelude::*;

const IN: usize = 256;
const OUT: usize = 64;
const ROWS: usize = 8;

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

fn main() -> Result<(), qlinear::Error> {
    let weight: Vec<f32> = values(OUT * IN, 7).iter().map(|v| v * 0.1).collect();
    let bias = values(OUT, 8);

    // Calibration: 16 batches of 8 rows through the float layer.
    let mut calibrator = Calibrator::new(&weight, OUT, IN, Some(&bias))?.relu(true);
    for batch in 0..16 {
        calibrator.observe_vec(&values(ROWS * IN, 100 + batch), ROWS)?;
    }
    let (input_qparams, output_qparams) = calibrator.qparams()?;
    println!(
        "observed input range {:?} -> {input_qparams:?}",
        calibrator.input_observer().min_max()
    );
    println!(
        "observed output range {:?} -> {output_qparams:?}",
        calibrator.output_observer().min_max()
    );

    let layer = calibrator.build(Observer::PER_CHANNEL_SYMMETRIC)?.build()?;
    println!("{layer:?}");

    // Held-out data: int8 against float.
    let x = values(ROWS * IN, 999);
    let want = calibrator.float_forward(MatRef::dense(&x, ROWS, IN)?)?;
    let got = layer.forward_f32_vec(&x, ROWS)?;
    let max_err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    println!(
        "max |int8 - f32| on held-out rows: {max_err:.4} (output step {:.4})",
        output_qparams.scale
    );

    // Same layer, every backend: the same bits.
    let reference: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
    for backend in qlinear::available_backends() {
        let on_backend = calibrator
            .build(Observer::PER_CHANNEL_SYMMETRIC)?
            .backend(backend)
            .build()?;
        let bits: Vec<u32> = on_backend
            .forward_f32_vec(&x, ROWS)?
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(bits, reference, "{backend} differs");
        println!("{backend}: {} bit-identical", on_backend.kernel_name());
    }
    Ok(())
}
