//! Accuracy of qlinear int8 against the crate's own f32 path on the real model.
//!
//! The model directory is `$QLINEAR_MINILM_DIR`, else
//! `~/.cache/qlinear/all-minilm-l6-v2` (fetch it with `.ci/minilm-model.sh`). When it
//! is absent the tests print why and pass, unless `QLINEAR_REQUIRE_MINILM=1`.

mod common;

use common::{mean_min_cosine, model_dir};
use minilm::{cosine, Embedder, ModelFiles, Precision, Settings};
use qlinear::{InputQuantization, Observer};

/// A dozen varied sentences: lengths from 2 to ~40 tokens, paraphrases, numbers,
/// punctuation, a question, non-English words, code-ish text.
const SENTENCES: [&str; 12] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a white horse on an enclosed ground.",
    "Hello!",
    "What is the capital city of Australia, and why isn't it Sydney?",
    "The quarterly revenue grew by 12.5% to $4.3 billion, beating analysts' estimates.",
    "Les chats dorment souvent plus de quinze heures par jour.",
    "fn main() { println!(\"hello, world\"); }",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "After the long winter, the villagers gathered in the square to celebrate the first \
     warm day of spring with music, food, dancing and a great deal of noisy laughter.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
];

/// (mean, min) cosine of `settings`' embeddings to the f32 ones.
fn agreement(files: &ModelFiles, reference: &[Vec<f32>], settings: &Settings) -> (f32, f32) {
    let e = Embedder::new(files, settings).unwrap();
    let emb = e.embed(&SENTENCES).unwrap();
    assert_eq!(emb.len(), SENTENCES.len());
    let (mean, min) = mean_min_cosine(&emb, reference);
    println!(
        "{:<32} vs f32: mean cosine {mean:.6}, min {min:.6}",
        settings.label()
    );
    (mean, min)
}

fn f32_embeddings(files: &ModelFiles) -> Vec<Vec<f32>> {
    Embedder::new(files, &Settings::f32())
        .unwrap()
        .embed(&SENTENCES)
        .unwrap()
}

#[test]
fn int8_defaults_track_f32() {
    let Some(dir) = model_dir() else { return };
    let files = ModelFiles::open(&dir).unwrap();
    let reference = f32_embeddings(&files);
    let (mean, min) = agreement(&files, &reference, &Settings::int8());
    assert!(
        mean >= 0.99,
        "int8 per-channel, full range: mean cosine {mean} < 0.99"
    );
    assert!(min > 0.95, "int8 per-channel: worst sentence at {min}");
}

#[test]
fn torch_defaults_are_less_accurate_than_ours() {
    let Some(dir) = model_dir() else { return };
    let files = ModelFiles::open(&dir).unwrap();
    let reference = f32_embeddings(&files);
    let (ours, _) = agreement(&files, &reference, &Settings::int8());
    let (torch, _) = agreement(&files, &reference, &Settings::int8_torch_default());
    // The two single changes, for the report.
    for (observer, reduce_range) in [
        (Observer::PER_TENSOR_SYMMETRIC, false),
        (Observer::PER_CHANNEL_SYMMETRIC, true),
    ] {
        let s = Settings {
            precision: Precision::Int8 {
                observer,
                reduce_range,
                input_quantization: InputQuantization::PerTensor,
            },
            threads: 1,
        };
        agreement(&files, &reference, &s);
    }
    assert!(
        torch < ours,
        "per-tensor + reduce_range ({torch}) should be below per-channel + full range ({ours})"
    );
}

#[test]
fn f32_embeddings_are_sensible() {
    let Some(dir) = model_dir() else { return };
    let files = ModelFiles::open(&dir).unwrap();
    let emb = f32_embeddings(&files);
    for (s, e) in SENTENCES.iter().zip(&emb) {
        assert_eq!(e.len(), 384);
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{s:?}: norm {norm}");
        assert!(e.iter().all(|v| v.is_finite()));
    }
    let paraphrase = cosine(&emb[0], &emb[1]);
    let unrelated = cosine(&emb[0], &emb[11]);
    println!("f32: paraphrase {paraphrase:.4}, unrelated {unrelated:.4}");
    assert!(
        paraphrase > unrelated + 0.3,
        "paraphrase {paraphrase} vs unrelated {unrelated}"
    );
    // Distinct sentences must not collapse onto one vector.
    for i in 0..emb.len() {
        for j in i + 1..emb.len() {
            assert!(cosine(&emb[i], &emb[j]) < 0.99, "{i} and {j} coincide");
        }
    }
}

/// The padding mask: in f32 a sentence's embedding does not depend on its batch.
#[test]
fn f32_embedding_is_independent_of_padding() {
    let Some(dir) = model_dir() else { return };
    let e = Embedder::load(&dir, &Settings::f32()).unwrap();
    let batched = e.embed(&SENTENCES).unwrap();
    for (i, s) in SENTENCES.iter().enumerate() {
        let alone = e.embed(&[s]).unwrap();
        let max_diff = alone[0]
            .iter()
            .zip(&batched[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 1e-4,
            "{s:?}: alone vs batched differ by {max_diff}"
        );
    }
}

/// An independent reference: the similarity matrix that sentence-transformers' docs
/// print for all-MiniLM-L6-v2 (torch, f32; sbert.net, "Semantic Textual Similarity",
/// four decimals). Each list is encoded as its own batch, as there.
#[test]
fn f32_matches_published_similarities() {
    let Some(dir) = model_dir() else { return };
    let e = Embedder::load(&dir, &Settings::f32()).unwrap();
    let left = [
        "The new movie is awesome",
        "The cat sits outside",
        "A man is playing guitar",
    ];
    let right = [
        "The dog plays in the garden",
        "The new movie is so great",
        "A woman watches TV",
    ];
    let published = [
        [0.0543, 0.8939, -0.0502],
        [0.2838, -0.0029, 0.1310],
        [0.2277, -0.0136, -0.0327],
    ];
    let a = e.embed(&left).unwrap();
    let b = e.embed(&right).unwrap();
    let mut worst = 0f32;
    for i in 0..3 {
        for j in 0..3 {
            let got = cosine(&a[i], &b[j]);
            let want: f32 = published[i][j];
            worst = worst.max((got - want).abs());
            assert!(
                (got - want).abs() < 1e-3,
                "{:?} vs {:?}: {got:.5}, published {want}",
                left[i],
                right[j]
            );
        }
    }
    println!("f32 vs sentence-transformers' published similarities: max |diff| {worst:.5}");
}

/// Inputs longer than the model's `max_seq_length` (256) are truncated, not refused.
#[test]
fn long_input_is_truncated() {
    let Some(dir) = model_dir() else { return };
    let e = Embedder::load(&dir, &Settings::int8()).unwrap();
    let long = "word ".repeat(2000);
    let batch = e.tokenize(&[long.as_str(), "short"]).unwrap();
    assert_eq!(batch.seq_len, 256);
    assert_eq!(batch.mask[256..].iter().filter(|&&m| m != 0).count(), 3);
    let emb = e.embed(&[long.as_str(), "short"]).unwrap();
    assert!(emb
        .iter()
        .all(|v| v.len() == 384 && v.iter().all(|x| x.is_finite())));
}
