//! A float safetensors checkpoint to int8 `DynamicLinear`s, through a memory map.
//!
//! Writes a small float "model" (two linear layers, one with an F16 weight, a bias and
//! an embedding), quantizes it with `quantize_checkpoint` (what `qlinear quantize`
//! does), saves it, maps the file with `memmap2` and loads each layer from the map: the
//! int8 weight is packed straight from the mapped bytes. The loaded layers equal
//! `DynamicLinear::from_float` bit for bit.
//!
//! ```sh
//! cargo run --release -p qlinear --example safetensors
//! ```

use qlinear::safetensors::{
    quantize_checkpoint, Checkpoint, Dtype, QuantizeOptions, SafetensorsWriter,
};
use qlinear::DynamicLinear;

/// Deterministic pseudo-random values in [-1, 1).
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A float checkpoint, as a training framework would save it.
    let fc1 = values(64 * 32, 1);
    let fc2_f16: Vec<u8> = values(16 * 64, 2)
        .iter()
        .flat_map(|&x| half_bits(x).to_le_bytes())
        .collect();
    let mut w = SafetensorsWriter::new();
    w.add_f32("model.fc1.weight", vec![64, 32], &fc1)?;
    w.add_f32("model.fc1.bias", vec![64], &values(64, 3))?;
    w.add("model.fc2.weight", Dtype::F16, vec![16, 64], fc2_f16)?;
    w.add_f32("model.embed.weight", vec![100, 32], &values(3200, 4))?;
    let float_file = w.to_bytes()?;

    // Quantize (per-tensor symmetric, embeddings left alone: torch's quantize_dynamic).
    let opts = QuantizeOptions::default();
    let (int8_file, summary) = quantize_checkpoint(&float_file, &opts)?;
    for t in &summary.quantized {
        println!("quantized {} {:?} {}", t.name, t.shape, t.dtype);
    }
    println!(
        "{} tensors copied; {} -> {} bytes",
        summary.copied, summary.bytes_in, summary.bytes_out
    );
    let path = std::env::temp_dir().join(format!(
        "qlinear-example-{}.safetensors",
        std::process::id()
    ));
    std::fs::write(&path, &int8_file)?;

    // Load through a memory map: parsing borrows the map, packing is the only copy.
    let file = std::fs::File::open(&path)?;
    // SAFETY: the file was written above and nothing modifies it while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let ckpt = Checkpoint::parse(&map)?;
    let fc1_layer = DynamicLinear::from_safetensors(&ckpt, "model.fc1")?
        .threads(1)
        .build()?;
    let fc2_layer = DynamicLinear::from_safetensors(&ckpt, "model.fc2")?.build()?;
    println!("fc1: {fc1_layer:?}");

    // Bit for bit what from_float gives (fc2's F16 values converted exactly).
    let want = DynamicLinear::from_float(&fc1, 64, 32, opts.observer())?.build()?;
    assert_eq!(fc1_layer.weight(), want.weight());
    let x = values(2 * 32, 5);
    let h = fc1_layer.forward_vec(&x, 2)?;
    let y = fc2_layer.forward_vec(&h, 2)?;
    println!("y[0..4] = {:?}", &y[..4]);
    drop(map);
    std::fs::remove_file(&path)?;
    Ok(())
}

/// f32 -> IEEE half bits, round to nearest even (values here are in [-1, 1), normal or
/// zero in f16; enough for an example without a `half` dependency).
fn half_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign; // flush the tiny ones to zero
    }
    let mant = b & 0x7f_ffff;
    let mut h = ((exp as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}
