//! `qlinear quantize`: a small float checkpoint made here (F32, F16 and BF16 weights),
//! quantized by the binary; the output loads as `DynamicLinear`s equal to
//! `from_float`'s bit for bit, everything else is byte-identical, `--dry-run` writes
//! nothing, include / exclude select, and a corrupt input is exit 2.

mod common;
use common::{run_qlinear, stderr, TempDir};

use qlinear::safetensors::{Checkpoint, Dtype, SafetensorsWriter};
use qlinear::{DynamicLinear, InputQuantization, Observer};
use qlinear_reference::testkit::Rng;

/// A float weight: name, shape, and the f32 values the quantizer sees.
type FloatWeight = (&'static str, [usize; 2], Vec<f32>);

/// The float weights of the test checkpoint, and the file.
fn checkpoint() -> (Vec<FloatWeight>, Vec<u8>) {
    let mut rng = Rng::new(2024);
    let mut w = SafetensorsWriter::new();
    let mut weights = Vec::new();
    let a = rng.f32s(16 * 24, 1.5);
    w.add_f32("encoder.layer.0.query.weight", vec![16, 24], &a)
        .unwrap();
    weights.push(("encoder.layer.0.query.weight", [16, 24], a));
    let h: Vec<half::f16> = rng
        .f32s(8 * 24, 0.7)
        .iter()
        .map(|&x| half::f16::from_f32(x))
        .collect();
    w.add(
        "encoder.layer.0.key.weight",
        Dtype::F16,
        vec![8, 24],
        h.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    weights.push((
        "encoder.layer.0.key.weight",
        [8, 24],
        h.iter().map(|x| x.to_f32()).collect(),
    ));
    let b: Vec<half::bf16> = rng
        .f32s(24 * 16, 3.0)
        .iter()
        .map(|&x| half::bf16::from_f32(x))
        .collect();
    w.add(
        "encoder.layer.1.output.dense.weight",
        Dtype::BF16,
        vec![24, 16],
        b.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    weights.push((
        "encoder.layer.1.output.dense.weight",
        [24, 16],
        b.iter().map(|x| x.to_f32()).collect(),
    ));
    w.add_f32("encoder.layer.0.query.bias", vec![16], &rng.f32s(16, 0.5))
        .unwrap();
    w.add_f32(
        "embeddings.word_embeddings.weight",
        vec![30, 24],
        &rng.f32s(720, 1.0),
    )
    .unwrap();
    w.add_f32(
        "encoder.layer.0.LayerNorm.weight",
        vec![24],
        &rng.f32s(24, 1.0),
    )
    .unwrap();
    w.set_metadata("format", "pt");
    (weights, w.to_bytes().unwrap())
}

#[test]
fn quantize_output_equals_from_float_and_copies_the_rest() {
    let dir = TempDir::new("quantize");
    let (weights, bytes) = checkpoint();
    let input = dir.file("in.safetensors");
    let output = dir.file("out.safetensors");
    std::fs::write(&input, &bytes).unwrap();
    for (flags, observer) in [
        (vec![], Observer::PER_TENSOR_SYMMETRIC),
        (vec!["--per-channel"], Observer::PER_CHANNEL_SYMMETRIC),
        (
            vec!["--per-channel", "--affine", "--reduce-range", "--per-row"],
            Observer {
                per_channel: true,
                symmetric: false,
                reduce_range: false,
            },
        ),
    ] {
        let mut args = vec!["quantize", &input, &output, "--progress"];
        args.extend(flags.iter().copied());
        let o = run_qlinear(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("[1/3] encoder.layer.0.query.weight 16x24 F32"),
            "{err}"
        );
        assert!(
            err.contains("[2/3] encoder.layer.1.output.dense.weight 24x16 BF16"),
            "{err}"
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("quantized 3 tensor(s), copied 3 unchanged"),
            "{out}"
        );

        let written = std::fs::read(&output).unwrap();
        let ck = Checkpoint::parse(&written).unwrap();
        let orig = Checkpoint::parse(&bytes).unwrap();
        for (name, [n, k], f) in &weights {
            let p = name.strip_suffix(".weight").unwrap();
            let got = DynamicLinear::from_safetensors(&ck, p)
                .unwrap()
                .build()
                .unwrap();
            let want = DynamicLinear::from_float(f, *n, *k, observer)
                .unwrap()
                .build()
                .unwrap();
            assert_eq!(got.weight(), want.weight(), "{name} {flags:?}");
            // The activation settings the flags ask for (full range, per-tensor unless
            // asked) are recorded and applied.
            assert_eq!(
                got.reduce_range(),
                flags.contains(&"--reduce-range"),
                "{name} {flags:?}"
            );
            let per_row = flags.contains(&"--per-row");
            assert_eq!(
                got.input_quantization(),
                if per_row {
                    InputQuantization::PerRow
                } else {
                    InputQuantization::PerTensor
                },
                "{name} {flags:?}"
            );
        }
        for name in [
            "encoder.layer.0.query.bias",
            "embeddings.word_embeddings.weight",
            "encoder.layer.0.LayerNorm.weight",
        ] {
            let (a, b) = (
                orig.tensors().tensor(name).unwrap(),
                ck.tensors().tensor(name).unwrap(),
            );
            assert_eq!(
                (a.dtype(), a.shape(), a.data()),
                (b.dtype(), b.shape(), b.data())
            );
        }
        assert_eq!(ck.metadata()["format"], "pt");
    }
}

#[test]
fn small_inputs_print_no_progress_by_default() {
    let dir = TempDir::new("quantize-quiet");
    let (_, bytes) = checkpoint();
    let input = dir.file("in.safetensors");
    let output = dir.file("out.safetensors");
    std::fs::write(&input, &bytes).unwrap();
    let o = run_qlinear(&["quantize", &input, &output]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("[1/3]"), "{}", stderr(&o));
}

#[test]
fn dry_run_lists_and_writes_nothing() {
    let dir = TempDir::new("quantize-dry");
    let (_, bytes) = checkpoint();
    let input = dir.file("in.safetensors");
    let output = dir.file("out.safetensors");
    std::fs::write(&input, &bytes).unwrap();
    let o = run_qlinear(&["quantize", &input, &output, "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("would quantize encoder.layer.0.key.weight 8x24 F16"),
        "{out}"
    );
    assert!(!out.contains("embeddings"), "{out}");
    assert!(out.contains("3 tensor(s) would be quantized"), "{out}");
    assert!(!std::path::Path::new(&output).exists());
    // OUT may be left out of a dry run.
    let o = run_qlinear(&["quantize", &input, "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn include_and_exclude_select() {
    let dir = TempDir::new("quantize-select");
    let (_, bytes) = checkpoint();
    let input = dir.file("in.safetensors");
    std::fs::write(&input, &bytes).unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec!["quantize", input.as_str(), "--dry-run"];
        args.extend(extra);
        let o = run_qlinear(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("would quantize "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(&["--include", "encoder.layer.0.*"]),
        ["encoder.layer.0.query.weight", "encoder.layer.0.key.weight"]
    );
    assert_eq!(
        list(&["--exclude", "*.key.*", "--exclude", "*output*"]),
        [
            "embeddings.word_embeddings.weight",
            "encoder.layer.0.query.weight"
        ]
    );
    assert_eq!(list(&["--include", "nothing*"]), Vec::<String>::new());
}

#[test]
fn corrupt_input_is_exit_2_and_writes_nothing() {
    let dir = TempDir::new("quantize-bad");
    let (_, bytes) = checkpoint();
    let output = dir.file("out.safetensors");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("garbage", b"definitely not safetensors".to_vec()),
    ];
    for (tag, data) in cases {
        let input = dir.file(&format!("{tag}.safetensors"));
        std::fs::write(&input, &data).unwrap();
        let o = run_qlinear(&["quantize", &input, &output]);
        assert_eq!(o.status.code(), Some(2), "{tag}");
        let err = stderr(&o);
        assert!(err.starts_with("error: "), "{tag}: {err}");
        assert!(err.contains("not a valid safetensors file"), "{tag}: {err}");
        assert!(!err.contains("panicked"), "{tag}: {err}");
        assert!(!std::path::Path::new(&output).exists(), "{tag}");
    }
    // A missing input file, and a non-finite weight (named in the error).
    let o = run_qlinear(&["quantize", &dir.file("nope.safetensors"), &output]);
    assert_eq!(o.status.code(), Some(2));
    let mut w = SafetensorsWriter::new();
    w.add_f32("fc.weight", vec![1, 2], &[0.5, f32::NAN])
        .unwrap();
    let input = dir.file("nan.safetensors");
    w.save(&input).unwrap();
    let o = run_qlinear(&["quantize", &input, &output]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`fc.weight`"), "{}", stderr(&o));
    assert!(!std::path::Path::new(&output).exists());
}
