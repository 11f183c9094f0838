//! Saving and loading packed layers (format v2, `docs/packed-format.md`).
//!
//! 1. builds a dynamic 1024 -> 4096 layer and saves it (weights, qparams, column sums,
//!    bias and options in one file);
//! 2. loads it back with `DynamicLinear::load` (read, checksum, direct checks, copy);
//! 3. maps the file with `memmap2` and loads it with `from_shared`: the packed data is
//!    used in place, no copy, when the layout matches a local kernel;
//! 4. loads it for every other backend this CPU runs (cross-kernel: unpacked and
//!    repacked when the layouts differ; the report says so);
//! 5. checks every loaded layer gives the original's bits.
//!
//! ```sh
//! cargo run --release -p qlinear --example save_load
//! ```

use std::sync::Arc;
use std::time::Instant;

use qlinear::prelude::*;

const IN: usize = 1024;
const OUT: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let w: Vec<f32> = (0..OUT * IN)
        .map(|i| ((i * 7919) % 2003) as f32 / 1001.0 - 1.0)
        .collect();
    let bias: Vec<f32> = (0..OUT).map(|i| (i % 17) as f32 * 0.01).collect();
    let layer = DynamicLinear::from_float(&w, OUT, IN, Observer::PER_CHANNEL_SYMMETRIC)?
        .bias(bias)
        .build()?;
    let x: Vec<f32> = (0..4 * IN)
        .map(|i| ((i * 31) % 97) as f32 / 48.0 - 1.0)
        .collect();
    let want: Vec<u32> = bits(&layer.forward_vec(&x, 4)?);

    let dir = std::env::temp_dir().join(format!("qlinear-save-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("layer.qlpw");
    layer.save(&path)?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "saved {} ({size} bytes) from {}",
        path.display(),
        layer.kernel_name()
    );

    // Read the whole file, verify it, copy the packed data into an aligned buffer.
    let t = Instant::now();
    let loaded = DynamicLinear::load(&path)?;
    println!(
        "load:        {:>8.2} ms  -> {}",
        ms(t),
        loaded.kernel_name()
    );
    assert_eq!(bits(&loaded.forward_vec(&x, 4)?), want);

    // Map the file: the page-aligned mapping keeps the data's 64-byte file alignment,
    // so the packed bytes are used where they lie.
    let file = std::fs::File::open(&path)?;
    // SAFETY: the file is private to this example and not modified while mapped (the
    // usual condition of a read-only file mapping).
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let t = Instant::now();
    let (mapped, report) = DynamicLinear::from_shared(Arc::new(map))?;
    println!(
        "from_shared: {:>8.2} ms  -> {} (zero copy: {}, repacked: {})",
        ms(t),
        mapped.kernel_name(),
        report.zero_copy,
        report.repacked
    );
    assert_eq!(bits(&mapped.forward_vec(&x, 4)?), want);

    // The same file on every backend of this CPU.
    let bytes = std::fs::read(&path)?;
    for backend in qlinear::available_backends() {
        let (other, report) = DynamicLinear::from_bytes_for(&bytes, backend)?;
        println!(
            "for {backend:<10} -> {:<24} repacked: {}",
            other.kernel_name(),
            report.repacked
        );
        assert_eq!(bits(&other.forward_vec(&x, 4)?), want, "{backend}");
    }
    std::fs::remove_dir_all(&dir)?;
    println!("every load gives the original's bits");
    Ok(())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
