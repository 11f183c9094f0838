//! Loading a layer from a memory-mapped safetensors file copies the weight once: the
//! packing. Measured with a counting global allocator: the peak extra memory of parse +
//! `from_safetensors` + `build` stays near the packed size, far below the two copies an
//! owned-weight-first load would make.
#![cfg(feature = "safetensors")]
// Test code: printing the measured figures is the point.
#![allow(clippy::print_stderr)]

mod counting_alloc;

use counting_alloc::{LIVE, PEAK};
use std::sync::atomic::Ordering;

use qlinear::safetensors::{Checkpoint, SafetensorsWriter};
use qlinear::{Backend, DynamicLinear, QuantizedWeight, WeightQParams};

#[test]
fn mmap_load_copies_the_weight_once() {
    let (n, k) = (1024, 4096); // a 4 MiB int8 weight
    let data: Vec<i8> = (0..n * k).map(|i| (i * 31 % 251) as i8).collect();
    let w = QuantizedWeight::new(
        data,
        n,
        k,
        WeightQParams::PerChannel {
            scales: vec![0.01; n],
            zero_points: vec![3; n],
        },
    )
    .unwrap();
    let layer = DynamicLinear::builder(w).build().unwrap();
    let mut writer = SafetensorsWriter::new();
    layer.write_safetensors("big", &mut writer).unwrap();
    let path =
        std::env::temp_dir().join(format!("qlinear-st-mem-{}.safetensors", std::process::id()));
    writer.save(&path).unwrap();
    drop((writer, layer));
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: the file was written above and nothing modifies it while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file).unwrap() };

    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let ck = Checkpoint::parse(&map).unwrap();
    let loaded = DynamicLinear::from_safetensors_for(&ck, "big", Backend::Auto)
        .unwrap()
        .threads(1)
        .build()
        .unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    let packed = loaded.packed().packed_len();
    eprintln!(
        "{}: peak extra {peak} bytes for a {} byte weight packed into {packed} bytes",
        loaded.kernel_name(),
        n * k
    );
    // The packing, its column sums and qparams, the parsed header, and the packer's
    // per-block scratch: well under one more copy of the weight.
    assert!(
        peak <= packed + (1 << 20),
        "peak extra {peak} > packed {packed} + 1 MiB: the weight was copied before packing"
    );
    drop((loaded, ck));

    // The bound can fail: an owned copy first (QuantizedWeight::from_safetensors, then
    // packing) exceeds it.
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let ck = Checkpoint::parse(&map).unwrap();
    let owned = QuantizedWeight::from_safetensors(&ck, "big").unwrap();
    let copied = DynamicLinear::builder(owned).threads(1).build().unwrap();
    let peak_copy = PEAK.load(Ordering::SeqCst) - before;
    eprintln!("owned-copy-first load: peak extra {peak_copy} bytes");
    assert!(peak_copy > packed + (1 << 20), "{peak_copy}");
    drop((copied, ck));
    std::fs::remove_file(&path).unwrap();
}
