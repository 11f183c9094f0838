//! Adversarial review of `qlinear quantize` (issue 10): the dry run fails where the
//! real run fails, OUT may be IN, and the output's layers load.

mod common;
use common::{run_qlinear, stderr, TempDir};

use qlinear::safetensors::{Checkpoint, SafetensorsWriter};
use qlinear::{DynamicLinear, Observer};

/// A weight with an empty dimension cannot be quantized: the real run is exit 2, and
/// the dry run must not list it as quantizable (it was exit 0 before the fix).
#[test]
fn dry_run_fails_like_the_real_run_on_an_empty_weight() {
    let dir = TempDir::new("review-quantize-empty");
    let mut w = SafetensorsWriter::new();
    w.add_f32("fc.weight", vec![0, 4], &[]).unwrap();
    let input = dir.file("in.safetensors");
    w.save(&input).unwrap();
    let output = dir.file("out.safetensors");
    let real = run_qlinear(&["quantize", &input, &output]);
    assert_eq!(real.status.code(), Some(2), "{}", stderr(&real));
    let dry = run_qlinear(&["quantize", &input, "--dry-run"]);
    assert_eq!(
        dry.status.code(),
        Some(2),
        "dry run: {}",
        String::from_utf8_lossy(&dry.stdout)
    );
    assert!(stderr(&dry).contains("fc.weight"), "{}", stderr(&dry));
    assert!(!std::path::Path::new(&output).exists());
}

/// `OUT` may be `IN` (documented): the file is replaced by its quantized version.
#[test]
fn quantize_in_place() {
    let dir = TempDir::new("review-quantize-inplace");
    let wf: Vec<f32> = (0..6 * 5).map(|i| (i as f32 * 0.29).cos()).collect();
    let mut w = SafetensorsWriter::new();
    w.add_f32("fc.weight", vec![6, 5], &wf).unwrap();
    w.add_f32("fc.bias", vec![6], &[0.5; 6]).unwrap();
    let path = dir.file("model.safetensors");
    w.save(&path).unwrap();
    let o = run_qlinear(&["quantize", &path, &path, "--per-channel"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&path).unwrap();
    let ck = Checkpoint::parse(&bytes).unwrap();
    let l = DynamicLinear::from_safetensors(&ck, "fc")
        .unwrap()
        .build()
        .unwrap();
    let want = DynamicLinear::from_float(&wf, 6, 5, Observer::PER_CHANNEL_SYMMETRIC)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(l.weight(), want.weight());
    assert_eq!(l.bias().unwrap(), &[0.5; 6]);
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(std::path::Path::new(&path).parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["model.safetensors"]);
}

/// Quantizing the same checkpoint twice gives byte-identical files (the output's
/// `__metadata__` has one key per quantized layer plus the input's keys).
#[test]
fn quantize_output_is_reproducible() {
    let dir = TempDir::new("review-quantize-repro");
    let mut w = SafetensorsWriter::new();
    for p in ["a", "b", "c", "d", "e"] {
        let wf: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        w.add_f32(format!("{p}.weight"), vec![3, 4], &wf).unwrap();
    }
    w.set_metadata("format", "pt");
    let input = dir.file("in.safetensors");
    w.save(&input).unwrap();
    let (o1, o2) = (dir.file("o1.safetensors"), dir.file("o2.safetensors"));
    for out in [&o1, &o2] {
        let o = run_qlinear(&["quantize", &input, out]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(std::fs::read(&o1).unwrap() == std::fs::read(&o2).unwrap());
}
