//! all-MiniLM-L6-v2 sentence embeddings end to end, with every `nn.Linear` of the
//! encoder a [`qlinear::DynamicLinear`].
//!
//! # Architecture
//!
//! The model is sentence-transformers' `all-MiniLM-L6-v2`: a 6-layer BERT
//! (hidden 384, 12 heads of 32, feed-forward 1536, exact GELU), then mean pooling over
//! the attention mask and L2 normalization (`modules.json`: Transformer → Pooling →
//! Normalize). Everything here is plain f32 Rust except the linear layers:
//!
//! 1. **Tokenize** ([`Embedder::tokenize`]): the `tokenizers` crate (pure Rust) reads
//!    the model's `tokenizer.json`; sentences are truncated to the model's
//!    `max_seq_length` (`sentence_bert_config.json`, else the tokenizer's own limit,
//!    else 512, never beyond the position table) and padded to the longest in the batch.
//! 2. **Embed**: word + position + token-type-0 embeddings, LayerNorm.
//! 3. **Encoder layers** (`encoder.rs`), each: q, k, v projections; per sentence and
//!    head, `softmax(Q K^T / sqrt(32))` over that sentence's real tokens (the padding
//!    mask), times V; output projection, residual, LayerNorm; intermediate projection,
//!    exact erf GELU (a branch-free erf within 3e-7 of `libm::erff`, so that
//!    it vectorizes); output projection, residual, LayerNorm.
//! 4. **Pool**: mean over real tokens, divide by the L2 norm.
//!
//! # Where qlinear plugs in
//!
//! The 36 linear layers (6 × q, k, v, attention output, intermediate, output) are all
//! built by one function, [`make_linear`], from the checkpoint's f32 weight
//! `[out, in]` and bias, according to [`Settings`]:
//!
//! * [`Precision::Int8`]: `DynamicLinear::from_float(w, out, in, observer)` then
//!   `.bias(b).reduce_range(..).input_quantization(..).threads(..)`. The defaults
//!   ([`Settings::int8`]) are per-channel symmetric weights, full-range activations
//!   quantized per tensor; [`Settings::int8_torch_default`] is torch's
//!   `quantize_dynamic` choice (per-tensor, reduced range);
//!   [`Settings::with_per_row`] gives every input row (token) its own activation scale
//!   (`InputQuantization::PerRow`).
//! * [`Precision::F32`]: the same product in f32 with `matrixmultiply::sgemm`
//!   (runtime AVX2/FMA dispatch), the honest baseline. Attention's two matmuls use
//!   that GEMM in both modes.
//!
//! By default activations are quantized per call over the whole `batch × seq_len`
//! matrix, padding rows included, as torch does with a padded batch; an int8 embedding
//! therefore depends slightly on the other sentences of its batch. Per-row mode removes
//! that dependence (each token row has its own scale).
//!
//! # Quantized checkpoints
//!
//! A `model.safetensors` written by `qlinear quantize` (or a file given with
//! [`ModelFiles::open_with_weights`], the CLI's `--weights`) holds the linear layers as
//! `I8` `P.weight` plus `P.weight_scale` / `P.weight_zero_point`. [`Checkpoint`] maps
//! the file; a layer whose weight is `I8` is loaded by [`load_quantized_linear`]
//! (`DynamicLinear::from_safetensors`, packing straight from the map), the others by
//! [`make_linear`]. The file decides the weights and their qparams; the run's
//! [`Settings`] decide `reduce_range`, per-tensor or per-row activations and threads
//! (they override the file's metadata). An f32 run of a quantized checkpoint is an
//! error: the file has no float weights for those layers. Quantizing with the same
//! observer as the run gives embeddings bit-identical to quantizing at load.
//!
//! ```no_run
//! use minilm::{Embedder, Settings};
//! # fn main() -> Result<(), minilm::Error> {
//! let e = Embedder::load("/path/to/all-minilm-l6-v2".as_ref(), &Settings::int8())?;
//! let v = e.embed(&["A man is eating food.", "A man eats something."])?;
//! println!("cosine {}", minilm::cosine(&v[0], &v[1]));
//! # Ok(()) }
//! ```
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod encoder;
mod linear;

pub use encoder::{Batch, BertConfig, Checkpoint, EncodeStats, Encoder};
pub use linear::{load_quantized_linear, make_linear, F32Linear, Layer, Precision, Settings};

use std::path::{Path, PathBuf};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Errors of loading the model or embedding sentences.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model directory is missing.
    #[error("model directory {0} does not exist (fetch it with .ci/minilm-model.sh)")]
    MissingModelDir(PathBuf),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A config file is malformed or unsupported.
    #[error("{path}: {msg}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The checkpoint lacks a tensor or has the wrong dtype or shape.
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The tokenizer failed to load or run.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// qlinear refused a layer or a call.
    #[error("linear layer {layer}: {source}")]
    Qlinear {
        /// The layer's checkpoint name.
        layer: String,
        /// qlinear's error.
        source: qlinear::Error,
    },
    /// Bad input (no sentences, inconsistent batch).
    #[error("{0}")]
    Input(String),
}

impl From<qlinear::Error> for Error {
    fn from(source: qlinear::Error) -> Self {
        Error::Qlinear {
            layer: "(forward)".into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The model directory's files, read and checked: config, tokenizer, checkpoint.
pub struct ModelFiles {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: BertConfig,
    /// The checkpoint (`model.safetensors`).
    pub checkpoint: Checkpoint,
    tokenizer: Tokenizer,
}

impl ModelFiles {
    /// Reads `config.json`, `tokenizer.json`, `model.safetensors` (and checks the
    /// optional `1_Pooling/config.json` asks for mean pooling).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_weights(dir, None)
    }

    /// [`ModelFiles::open`] with the checkpoint `weights` instead of the directory's
    /// `model.safetensors` (float, or quantized by `qlinear quantize`) when given.
    pub fn open_with_weights(dir: &Path, weights: Option<&Path>) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingModelDir(dir.to_path_buf()));
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let pooling = dir.join("1_Pooling/config.json");
        if pooling.exists() {
            let text = encoder::read_to_string(&pooling)?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
                path: pooling.clone(),
                msg: e.to_string(),
            })?;
            if v.get("pooling_mode_mean_tokens") != Some(&serde_json::Value::Bool(true)) {
                return Err(Error::Config {
                    path: pooling,
                    msg: "only mean pooling (pooling_mode_mean_tokens) is supported".into(),
                });
            }
        }
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::Io {
                path: tok_path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let max_len = max_seq_length(dir, &tokenizer, &config)?;
        let (pad_id, pad_token) = match tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone()),
            None => (0, "[PAD]".to_string()),
        };
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        let checkpoint = match weights {
            Some(w) => Checkpoint::open(w)?,
            None => Checkpoint::open(&dir.join("model.safetensors"))?,
        };
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            config,
            checkpoint,
            tokenizer,
        })
    }
}

/// sentence-transformers' `max_seq_length`, else the tokenizer's truncation, else 512;
/// never more than the position table.
fn max_seq_length(dir: &Path, tokenizer: &Tokenizer, cfg: &BertConfig) -> Result<usize> {
    let st = dir.join("sentence_bert_config.json");
    let from_st = if st.exists() {
        let text = encoder::read_to_string(&st)?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: st.clone(),
            msg: e.to_string(),
        })?;
        v.get("max_seq_length")
            .and_then(|m| m.as_u64())
            .map(|m| m as usize)
    } else {
        None
    };
    let len = from_st
        .or_else(|| tokenizer.get_truncation().map(|t| t.max_length))
        .unwrap_or(512);
    Ok(len.clamp(2, cfg.max_position_embeddings))
}

/// Time spent in each phase of [`Embedder::embed_timed`], seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Tokenization.
    pub tokenize: f64,
    /// The encoder (embeddings to pooled, normalized vectors).
    pub encode: f64,
    /// The encoder's split.
    pub stats: EncodeStats,
}

/// Tokenizer plus encoder: sentences in, unit-norm embeddings out.
pub struct Embedder {
    tokenizer: Tokenizer,
    encoder: Encoder,
}

impl Embedder {
    /// Reads the model directory and builds the encoder with `settings`.
    pub fn load(dir: &Path, settings: &Settings) -> Result<Self> {
        Self::new(&ModelFiles::open(dir)?, settings)
    }

    /// Builds an encoder with `settings` from files already read (one read, several
    /// precisions).
    pub fn new(files: &ModelFiles, settings: &Settings) -> Result<Self> {
        Ok(Embedder {
            tokenizer: files.tokenizer.clone(),
            encoder: Encoder::new(&files.config, &files.checkpoint, settings)?,
        })
    }

    /// The settings of the encoder.
    pub fn settings(&self) -> &Settings {
        self.encoder.settings()
    }

    /// How many of the encoder's linear layers were loaded already quantized from the
    /// checkpoint, and how many linear layers there are.
    pub fn quantized_layers(&self) -> (usize, usize) {
        (
            self.encoder.quantized_layers(),
            self.encoder.linear_layers(),
        )
    }

    /// What computes the linear layers (qlinear's kernel name, or the f32 GEMM).
    pub fn linear_kernel(&self) -> &'static str {
        self.encoder.linear_kernel()
    }

    /// Tokenizes, truncates and pads `sentences` to one batch.
    pub fn tokenize(&self, sentences: &[&str]) -> Result<Batch> {
        if sentences.is_empty() {
            return Err(Error::Input("no sentences to embed".into()));
        }
        let encodings = self
            .tokenizer
            .encode_batch(sentences.to_vec(), true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let seq_len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sentences.len() * seq_len);
        let mut mask = Vec::with_capacity(sentences.len() * seq_len);
        for e in &encodings {
            if e.len() != seq_len {
                return Err(Error::Tokenizer("batch is not padded to one length".into()));
            }
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(Batch {
            ids,
            mask,
            batch: sentences.len(),
            seq_len,
        })
    }

    /// Embeds a tokenized batch.
    pub fn encode(&self, batch: &Batch, stats: &mut EncodeStats) -> Result<Vec<Vec<f32>>> {
        self.encoder.encode(batch, stats)
    }

    /// Embeds `sentences` as one batch: 384-float unit vectors.
    pub fn embed(&self, sentences: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_timed(sentences)?.0)
    }

    /// [`Embedder::embed`] with its timings.
    pub fn embed_timed(&self, sentences: &[&str]) -> Result<(Vec<Vec<f32>>, Timings)> {
        let t = std::time::Instant::now();
        let batch = self.tokenize(sentences)?;
        let tokenize = t.elapsed().as_secs_f64();
        let mut stats = EncodeStats::default();
        let out = self.encode(&batch, &mut stats)?;
        Ok((
            out,
            Timings {
                tokenize,
                encode: stats.total.as_secs_f64(),
                stats,
            },
        ))
    }
}

/// Embeds `sentences` with the model in `dir`: load, tokenize, encode.
pub fn embed(dir: &Path, sentences: &[&str], settings: &Settings) -> Result<Vec<Vec<f32>>> {
    Embedder::load(dir, settings)?.embed(sentences)
}

/// Cosine similarity (0 when either vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na * nb)) as f32
    }
}

/// 32 sentences of 10–25 tokens for the benchmark (`--bench` without sentences).
pub const BENCH_SENTENCES: [&str; 32] = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A man is playing a guitar on the street corner for spare change.",
    "Quantized linear layers trade a little accuracy for a lot of speed.",
    "She forgot her umbrella at the station and got soaked on the way home.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Children were building a sandcastle while the tide slowly came in.",
    "Our flight to Lisbon was delayed by three hours because of fog.",
    "He spent the whole weekend repairing the old wooden fence in the garden.",
    "The new phone has a larger battery but the camera is slightly worse.",
    "Researchers found that regular exercise improves memory in older adults.",
    "Please send me the quarterly report before the meeting on Thursday morning.",
    "The restaurant around the corner serves the best noodles in town.",
    "A cat is sleeping on the warm windowsill in the afternoon sun.",
    "The orchestra rehearsed the symphony for weeks before the premiere.",
    "Heavy snowfall closed several mountain roads and stranded hundreds of drivers.",
    "I would like to book a table for four people at seven tonight.",
    "The software update fixed the bug that crashed the app on startup.",
    "Volunteers planted two thousand trees along the highway last spring.",
    "My grandmother tells the most wonderful stories about her childhood.",
    "The museum's new exhibition features paintings from the Dutch golden age.",
    "Electric cars are becoming cheaper as battery prices keep falling.",
    "The football match ended in a draw after a dramatic late equalizer.",
    "A woman is slicing tomatoes and onions for a fresh summer salad.",
    "The library extended its opening hours during the exam period.",
    "Scientists detected water vapor in the atmosphere of a distant planet.",
    "The hikers reached the summit just before the storm rolled in.",
    "Remember to water the plants while I am away on vacation.",
    "The committee postponed its decision until more data is available.",
    "A dog chased the ball across the park and brought it back proudly.",
    "The bakery sells fresh croissants every morning from six o'clock.",
    "Traffic in the city center is terrible during the morning rush hour.",
    "The professor explained the theorem with a simple and elegant proof.",
];
