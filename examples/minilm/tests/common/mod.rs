//! Helpers shared by the MiniLM test files: locating the downloaded model (or skipping
//! without it), cosine agreement and exact embedding bits.
#![allow(dead_code)] // each test file uses its own subset

use minilm::cosine;
use std::path::PathBuf;

/// The model directory: `$QLINEAR_MINILM_DIR`, else `~/.cache/qlinear/all-minilm-l6-v2`
/// (fetch it with `.ci/minilm-model.sh`). `None`, after printing why, when it holds no
/// `model.safetensors`; a panic instead when `QLINEAR_REQUIRE_MINILM=1`.
pub fn model_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("QLINEAR_MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/qlinear/all-minilm-l6-v2")
        }
    };
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    let msg = format!(
        "MiniLM model not found at {} (set QLINEAR_MINILM_DIR or run .ci/minilm-model.sh)",
        dir.display()
    );
    if std::env::var("QLINEAR_REQUIRE_MINILM").as_deref() == Ok("1") {
        panic!("{msg}; QLINEAR_REQUIRE_MINILM=1 makes this a failure");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// (mean, min) cosine of each of `emb` to the matching one of `reference`.
pub fn mean_min_cosine(emb: &[Vec<f32>], reference: &[Vec<f32>]) -> (f32, f32) {
    let cos: Vec<f32> = emb
        .iter()
        .zip(reference)
        .map(|(a, b)| cosine(a, b))
        .collect();
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    (mean, cos.iter().copied().fold(f32::INFINITY, f32::min))
}

/// Bits of every embedding, for exact comparisons.
pub fn bits(emb: &[Vec<f32>]) -> Vec<Vec<u32>> {
    emb.iter()
        .map(|e| e.iter().map(|v| v.to_bits()).collect())
        .collect()
}
