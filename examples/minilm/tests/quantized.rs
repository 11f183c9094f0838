//! The real model from a checkpoint quantized by `qlinear quantize`
//! (`quantize_checkpoint`), and per-row activation quantization.
//!
//! The model directory is `$QLINEAR_MINILM_DIR`, else
//! `~/.cache/qlinear/all-minilm-l6-v2` (fetch it with `.ci/minilm-model.sh`). When it
//! is absent the tests print why and pass, unless `QLINEAR_REQUIRE_MINILM=1`.

mod common;

use common::{bits, mean_min_cosine, model_dir};
use minilm::{Embedder, ModelFiles, Precision, Settings};
use qlinear::safetensors::{quantize_checkpoint, QuantizeOptions};
use qlinear::{InputQuantization, Observer};
use std::path::{Path, PathBuf};

/// Varied sentences: short, long, numbers, non-English, code.
const SENTENCES: [&str; 8] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "Hello!",
    "What is the capital city of Australia, and why isn't it Sydney?",
    "The quarterly revenue grew by 12.5% to $4.3 billion, beating analysts' estimates.",
    "Les chats dorment souvent plus de quinze heures par jour.",
    "fn main() { println!(\"hello, world\"); }",
    "After the long winter, the villagers gathered in the square to celebrate the first \
     warm day of spring with music, food, dancing and a great deal of noisy laughter.",
];

/// The model's checkpoint quantized with `opts`, written to a scratch file.
fn quantized(dir: &Path, name: &str, opts: &QuantizeOptions) -> PathBuf {
    let input = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (bytes, summary) = quantize_checkpoint(&input, opts).unwrap();
    // 6 layers x 6 linear weights, plus the pooler's dense layer if the file has one.
    assert!(summary.quantized.len() >= 36, "{}", summary.quantized.len());
    assert!(summary
        .quantized
        .iter()
        .all(|t| !t.name.contains("embeddings")));
    let out = std::env::temp_dir().join(format!("minilm-q-{}-{name}", std::process::id()));
    std::fs::write(&out, bytes).unwrap();
    out
}

fn embed(files: &ModelFiles, settings: &Settings) -> Vec<Vec<f32>> {
    Embedder::new(files, settings)
        .unwrap()
        .embed(&SENTENCES)
        .unwrap()
}

fn int8(observer: Observer, reduce_range: bool, rows: InputQuantization) -> Settings {
    Settings {
        precision: Precision::Int8 {
            observer,
            reduce_range,
            input_quantization: rows,
        },
        threads: 1,
    }
}

#[test]
fn quantized_checkpoint_embeds_bit_identically_to_quantizing_at_load() {
    let Some(dir) = model_dir() else { return };
    let float = ModelFiles::open(&dir).unwrap();
    use InputQuantization::{PerRow, PerTensor};
    let cases = [
        (
            true,
            "per-channel",
            int8(Observer::PER_CHANNEL_SYMMETRIC, false, PerTensor),
        ),
        (
            true,
            "per-channel",
            int8(Observer::PER_CHANNEL_SYMMETRIC, false, PerRow),
        ),
        (
            false,
            "per-tensor",
            int8(Observer::PER_TENSOR_SYMMETRIC, false, PerTensor),
        ),
        (
            false,
            "per-tensor",
            int8(Observer::PER_TENSOR_SYMMETRIC, true, PerTensor),
        ),
    ];
    for per_channel in [true, false] {
        let opts = QuantizeOptions {
            per_channel,
            ..QuantizeOptions::default()
        };
        let path = quantized(&dir, if per_channel { "pc" } else { "pt" }, &opts);
        let q = ModelFiles::open_with_weights(&dir, Some(&path)).unwrap();
        for (_, what, settings) in cases.iter().filter(|c| c.0 == per_channel) {
            let loaded = Embedder::new(&q, settings).unwrap();
            assert_eq!(loaded.quantized_layers(), (36, 36));
            let a = loaded.embed(&SENTENCES).unwrap();
            let b = embed(&float, settings);
            assert_eq!(
                bits(&a),
                bits(&b),
                "{what} checkpoint vs {} quantized at load",
                settings.label()
            );
            eprintln!(
                "{what} checkpoint == {} quantized at load: {} embeddings bit-identical",
                settings.label(),
                a.len()
            );
        }
        // The f32 mode has no float weights in this file.
        let err = Embedder::new(&q, &Settings::f32()).err().unwrap();
        assert!(err.to_string().contains("int8"), "{err}");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn per_row_agrees_with_f32() {
    let Some(dir) = model_dir() else { return };
    let files = ModelFiles::open(&dir).unwrap();
    let reference = embed(&files, &Settings::f32());
    eprintln!(
        "cosine to f32 over {} sentences (mean / min):",
        SENTENCES.len()
    );
    eprintln!(
        "  {:<28} {:>17} {:>17}",
        "weights, activation range", "per-tensor input", "per-row input"
    );
    let mut per_row_pc = 0.0;
    for (observer, reduce_range, what) in [
        (
            Observer::PER_CHANNEL_SYMMETRIC,
            false,
            "per-channel, full range",
        ),
        (
            Observer::PER_TENSOR_SYMMETRIC,
            true,
            "per-tensor, reduce_range",
        ),
    ] {
        let (pt_mean, pt_min) = mean_min_cosine(
            &embed(
                &files,
                &int8(observer, reduce_range, InputQuantization::PerTensor),
            ),
            &reference,
        );
        let (pr_mean, pr_min) = mean_min_cosine(
            &embed(
                &files,
                &int8(observer, reduce_range, InputQuantization::PerRow),
            ),
            &reference,
        );
        eprintln!("  {what:<28} {pt_mean:.6} / {pt_min:.6}  {pr_mean:.6} / {pr_min:.6}");
        if observer == Observer::PER_CHANNEL_SYMMETRIC {
            per_row_pc = pr_mean;
        }
    }
    assert!(
        per_row_pc >= 0.99,
        "per-row input with per-channel weights: mean cosine {per_row_pc} < 0.99"
    );
}
