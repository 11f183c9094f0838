//! The BERT encoder in plain f32 Rust, its config and its checkpoint.

use crate::linear::{load_quantized_linear, make_linear, sgemm, Layer, Operand, Settings};
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fields of Hugging Face's `config.json` that a BERT encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Width of the hidden states (384 for MiniLM-L6).
    pub hidden_size: usize,
    /// Encoder layers (6).
    pub num_hidden_layers: usize,
    /// Attention heads per layer (12).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer (1536).
    pub intermediate_size: usize,
    /// Positions the position embedding covers (512).
    pub max_position_embeddings: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Token types (2).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (1e-12).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Feed-forward activation; only `gelu` (exact, erf) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_to_string(path)?;
        let cfg: BertConfig = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let bad = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        if cfg.hidden_act != "gelu" {
            return Err(bad(format!(
                "hidden_act {:?} is not supported (only \"gelu\")",
                cfg.hidden_act
            )));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if cfg.hidden_size == 0 || cfg.intermediate_size == 0 || cfg.max_position_embeddings == 0 {
            return Err(bad("zero-sized dimension".into()));
        }
        Ok(cfg)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A safetensors checkpoint with torch `BertModel` names, checked as it is read.
///
/// The file is memory-mapped, not read: f32 tensors are decoded from the map into
/// their own buffers, and int8 linear layers (a checkpoint from `qlinear quantize`) are
/// packed straight from it, so their weights are never copied before packing.
pub struct Checkpoint {
    path: PathBuf,
    bytes: memmap2::Mmap,
    /// `""` or `"bert."` (checkpoints saved from a `BertFor...` head).
    prefix: &'static str,
}

impl Checkpoint {
    /// Maps the file and checks its header.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; like every
        // memory-mapped model loader, it relies on the file not being truncated or
        // rewritten while the checkpoint is alive (the layers copy or pack what they
        // need while the encoder is built, so that window is the load itself).
        let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("not a safetensors file: {e}"),
        })?;
        let names = st.names();
        let prefix = if names.iter().any(|n| n.starts_with("bert.embeddings.")) {
            "bert."
        } else {
            ""
        };
        Ok(Checkpoint {
            path: path.to_path_buf(),
            bytes,
            prefix,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file parsed by qlinear (header only; tensors stay in the map).
    fn qlinear_checkpoint(&self) -> Result<qlinear::safetensors::Checkpoint<'_>> {
        qlinear::safetensors::Checkpoint::parse(&self.bytes).map_err(|e| Error::Checkpoint {
            path: self.path.clone(),
            msg: e.to_string(),
        })
    }

    /// True when the linear layer `name` (without the `bert.` prefix) is stored
    /// quantized: its `name.weight` is `I8`.
    pub fn is_quantized_linear(&self, name: &str) -> Result<bool> {
        let ck = self.qlinear_checkpoint()?;
        let full = format!("{}{name}.weight", self.prefix);
        Ok(ck
            .tensors()
            .tensor(&full)
            .is_ok_and(|v| v.dtype() == qlinear::safetensors::Dtype::I8))
    }

    /// The f32 tensor `name` (without the `bert.` prefix), which must have `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let bad = |msg: String| Error::Checkpoint {
            path: self.path.clone(),
            msg,
        };
        // Parsing the header again per tensor keeps `Checkpoint` free of self-borrows;
        // it is microseconds against the milliseconds of quantizing a layer.
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| bad(e.to_string()))?;
        let full = format!("{}{name}", self.prefix);
        let view = st
            .tensor(&full)
            .map_err(|_| bad(format!("tensor {full} is missing")))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {full} has dtype {:?}, expected F32",
                view.dtype()
            )));
        }
        if view.shape() != shape {
            return Err(bad(format!(
                "tensor {full} has shape {:?}, expected {shape:?}",
                view.shape()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "tensor {full} holds a non-finite value at {i}"
            )));
        }
        Ok(data)
    }

    /// The torch `nn.Linear` under `name` (`name.weight` `[out, in]`, `name.bias`
    /// `[out]`): built by [`make_linear`] from f32 tensors, or, when the file holds the
    /// layer quantized (`name.weight` is `I8`, as `qlinear quantize` writes it), loaded
    /// by [`load_quantized_linear`](crate::load_quantized_linear) (see there for which
    /// settings come from the file and which from `settings`).
    pub fn linear(
        &self,
        name: &str,
        out_features: usize,
        in_features: usize,
        settings: &Settings,
    ) -> Result<Layer> {
        if self.is_quantized_linear(name)? {
            let ck = self.qlinear_checkpoint()?;
            let full = format!("{}{name}", self.prefix);
            return load_quantized_linear(
                &ck,
                &self.path,
                &full,
                out_features,
                in_features,
                settings,
            );
        }
        let weight = self.tensor(&format!("{name}.weight"), &[out_features, in_features])?;
        let bias = self.tensor(&format!("{name}.bias"), &[out_features])?;
        make_linear(name, weight, out_features, in_features, bias, settings)
    }

    fn layer_norm(&self, name: &str, width: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: self.tensor(&format!("{name}.weight"), &[width])?,
            beta: self.tensor(&format!("{name}.bias"), &[width])?,
            eps,
        })
    }
}

/// LayerNorm over the last dimension.
#[derive(Debug, Clone)]
struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// `x = LayerNorm(x + residual)`, row by row.
    fn add_norm(&self, x: &mut [f32], residual: Option<&[f32]>) {
        let h = self.gamma.len();
        for (r, row) in x.chunks_exact_mut(h).enumerate() {
            if let Some(res) = residual {
                for (v, a) in row.iter_mut().zip(&res[r * h..(r + 1) * h]) {
                    *v += a;
                }
            }
            let mean = lane_sum(row, |v| v) / h as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / h as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

/// Exact GELU: `x/2 (1 + erf(x / sqrt 2))` (torch's default, not the tanh form), with
/// the loop compiled for AVX2 when the CPU has it (8 lanes instead of SSE2's 4).
fn gelu(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { gelu_avx2(x) };
        return;
    }
    gelu_loop(x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gelu_avx2(x: &mut [f32]) {
    gelu_loop(x);
}

#[inline(always)]
fn gelu_loop(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `sum(f(v))` over `row` in 8 independent lanes, so that it vectorizes (a single f32
/// accumulator is a chain of dependent adds).
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// `e^a` for `a <= 0`, branch-free so that loops over it vectorize: `a = n ln 2 + r`,
/// `|r| <= ln 2 / 2`, `e^r` by its degree-7 Taylor polynomial (truncation < 1e-8
/// relative), `2^n` built in the exponent bits. Arguments below -87 give `e^-87`.
#[inline(always)]
fn exp_nonpositive(a: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let a = a.max(-87.0);
    let shifted = a * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (a - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // n is in [-126, 0], so the biased exponent n + 127 is a normal one. The low bits
    // of `shifted` hold n (two's complement): integer lanes, no saturating cast.
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    let scale = f32::from_bits(biased << 23);
    p * scale
}

/// `erf(x)` to within 3e-7 absolute (tested against `libm::erff`), branch-free:
/// the Maclaurin series below 0.5, above it Abramowitz & Stegun 7.1.26, `1 - t (a1 + a2 t + ... + a5 t^4) e^{-x^2}`,
/// `t = 1 / (1 + p |x|)`, with the sign of `x`. `libm::erff` is exact to an ulp but
/// scalar and branchy, and took more time than all 36 int8 layers (6.5 M calls per
/// batch of 32).
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let tail = (1.0 - poly * exp_nonpositive(-ax * ax)).copysign(x);
    // Near 0, 1 - poly e^{-x^2} cancels; the Maclaurin series (to x^13, truncation
    // < 1e-9 for |x| < 0.5) is exact to an ulp there. Both sides are computed and one
    // selected, which keeps the loop branch-free.
    let x2 = x * x;
    let s = -1.0 / 75_600.0;
    let s = s * x2 + 1.0 / 9_360.0;
    let s = s * x2 - 1.0 / 1_320.0;
    let s = s * x2 + 1.0 / 216.0;
    let s = s * x2 - 1.0 / 42.0;
    let s = s * x2 + 0.1;
    let s = s * x2 - 1.0 / 3.0;
    let s = s * x2 + 1.0;
    let series = std::f32::consts::FRAC_2_SQRT_PI * x * s;
    if ax < 0.5 {
        series
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm() {
        let mut worst = (0f32, 0f32);
        let mut x = -10.0f32;
        while x <= 10.0 {
            let err = (erf(x) - libm::erff(x)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
            x += 1.0 / 1024.0;
        }
        assert!(worst.0 < 3e-7, "erf off by {} at {}", worst.0, worst.1);
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(20.0), 1.0);
        assert_eq!(erf(-20.0), -1.0);
    }

    #[test]
    fn exp_matches_std() {
        let mut a = -87.0f32;
        while a <= 0.0 {
            let (got, want) = (exp_nonpositive(a), a.exp());
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON * want,
                "{a}: {got} vs {want}"
            );
            a += 1.0 / 256.0;
        }
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        let mut v: Vec<f32> = (-800..=800).map(|i| i as f32 / 100.0).collect();
        let want: Vec<f32> = v
            .iter()
            .map(|&x| (0.5 * x as f64 * (1.0 + libm::erf(x as f64 / 2f64.sqrt()))) as f32)
            .collect();
        gelu(&mut v);
        for (g, w) in v.iter().zip(&want) {
            assert!((g - w).abs() < 2e-6, "{g} vs {w}");
        }
    }
}

struct EncoderLayer {
    query: Layer,
    key: Layer,
    value: Layer,
    attn_out: Layer,
    attn_norm: LayerNorm,
    intermediate: Layer,
    output: Layer,
    out_norm: LayerNorm,
}

/// Where an encode call's time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeStats {
    /// In the 36 linear layers (qlinear or the f32 GEMM).
    pub linear: Duration,
    /// In attention: scores, softmax, context (f32 GEMM in every mode).
    pub attention: Duration,
    /// In the feed-forward activation (exact GELU).
    pub gelu: Duration,
    /// The whole encode: embeddings, norms, GELU, pooling and the above.
    pub total: Duration,
}

impl EncodeStats {
    /// Everything but linear layers, attention and GELU: embeddings, LayerNorms,
    /// pooling.
    pub fn other(&self) -> Duration {
        self.total
            .saturating_sub(self.linear + self.attention + self.gelu)
    }
}

/// A tokenized, padded batch: `batch x seq_len` ids and attention mask.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids, row-major `batch x seq_len`.
    pub ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<u32>,
    /// Sentences.
    pub batch: usize,
    /// Padded length.
    pub seq_len: usize,
}

/// The linear layers of one BERT layer, under `encoder.layer.N.`.
const LINEAR_NAMES: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// The BERT encoder with mean pooling and L2 normalization.
pub struct Encoder {
    cfg: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    settings: Settings,
    quantized_layers: usize,
}

impl Encoder {
    /// Builds the encoder's layers from a checkpoint with `settings`.
    pub fn new(cfg: &BertConfig, ckpt: &Checkpoint, settings: &Settings) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let eps = cfg.layer_norm_eps as f32;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let mut quantized_layers = 0;
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            for name in LINEAR_NAMES {
                if ckpt.is_quantized_linear(&format!("{p}.{name}"))? {
                    quantized_layers += 1;
                }
            }
            layers.push(EncoderLayer {
                query: ckpt.linear(&format!("{p}.attention.self.query"), h, h, settings)?,
                key: ckpt.linear(&format!("{p}.attention.self.key"), h, h, settings)?,
                value: ckpt.linear(&format!("{p}.attention.self.value"), h, h, settings)?,
                attn_out: ckpt.linear(&format!("{p}.attention.output.dense"), h, h, settings)?,
                attn_norm: ckpt.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                intermediate: ckpt.linear(&format!("{p}.intermediate.dense"), i, h, settings)?,
                output: ckpt.linear(&format!("{p}.output.dense"), h, i, settings)?,
                out_norm: ckpt.layer_norm(&format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Encoder {
            word: ckpt.tensor("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: ckpt.tensor(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: ckpt.tensor(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?,
            emb_norm: ckpt.layer_norm("embeddings.LayerNorm", h, eps)?,
            layers,
            cfg: cfg.clone(),
            settings: *settings,
            quantized_layers,
        })
    }

    /// How many linear layers were loaded already quantized from the checkpoint (the
    /// others were quantized at load, or run in f32).
    pub fn quantized_layers(&self) -> usize {
        self.quantized_layers
    }

    /// How many linear layers the encoder has (6 per BERT layer).
    pub fn linear_layers(&self) -> usize {
        self.layers.len() * LINEAR_NAMES.len()
    }

    /// The settings the layers were built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What computes the linear layers: qlinear's kernel name, or `f32 sgemm`.
    pub fn linear_kernel(&self) -> &'static str {
        self.layers
            .first()
            .map_or("none", |l| l.query.kernel_name())
    }

    /// Sentence embeddings (mean over the mask, L2-normalized), one per batch row.
    pub fn encode(&self, batch: &Batch, stats: &mut EncodeStats) -> Result<Vec<Vec<f32>>> {
        let start = Instant::now();
        let (b, l) = (batch.batch, batch.seq_len);
        let h = self.cfg.hidden_size;
        if batch.ids.len() != b * l || batch.mask.len() != b * l {
            return Err(Error::Input(
                "batch ids/mask do not match batch x seq_len".into(),
            ));
        }
        if l > self.cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "sequence of {l} tokens exceeds max_position_embeddings {}",
                self.cfg.max_position_embeddings
            )));
        }
        let rows = b * l;
        // Embeddings: word + position + token type 0, then LayerNorm.
        let mut hidden = vec![0f32; rows * h];
        for (r, out) in hidden.chunks_exact_mut(h).enumerate() {
            let id = batch.ids[r] as usize;
            if id >= self.cfg.vocab_size {
                return Err(Error::Input(format!(
                    "token id {id} outside the vocabulary ({})",
                    self.cfg.vocab_size
                )));
            }
            let pos = r % l;
            let w = &self.word[id * h..(id + 1) * h];
            let p = &self.position[pos * h..(pos + 1) * h];
            let t = &self.token_type[..h];
            for j in 0..h {
                out[j] = w[j] + p[j] + t[j];
            }
        }
        self.emb_norm.add_norm(&mut hidden, None);

        let lens: Vec<usize> = batch
            .mask
            .chunks_exact(l.max(1))
            .map(|m| m.iter().filter(|&&v| v != 0).count())
            .collect();
        let mut q = vec![0f32; rows * h];
        let mut k = vec![0f32; rows * h];
        let mut v = vec![0f32; rows * h];
        let mut ctx = vec![0f32; rows * h];
        let mut attn = vec![0f32; rows * h];
        let mut inter = vec![0f32; rows * self.cfg.intermediate_size];
        let mut scores = vec![0f32; l * l];

        for layer in &self.layers {
            let t = Instant::now();
            layer.query.forward(&hidden, rows, &mut q)?;
            layer.key.forward(&hidden, rows, &mut k)?;
            layer.value.forward(&hidden, rows, &mut v)?;
            stats.linear += t.elapsed();

            let t = Instant::now();
            self.attention(&q, &k, &v, &lens, l, &mut scores, &mut ctx);
            stats.attention += t.elapsed();

            let t = Instant::now();
            layer.attn_out.forward(&ctx, rows, &mut attn)?;
            stats.linear += t.elapsed();
            layer.attn_norm.add_norm(&mut attn, Some(&hidden));

            let t = Instant::now();
            layer.intermediate.forward(&attn, rows, &mut inter)?;
            stats.linear += t.elapsed();
            let t = Instant::now();
            gelu(&mut inter);
            stats.gelu += t.elapsed();
            let t = Instant::now();
            layer.output.forward(&inter, rows, &mut hidden)?;
            stats.linear += t.elapsed();
            layer.out_norm.add_norm(&mut hidden, Some(&attn));
        }

        // Mean pooling over the mask, then L2 normalization (F.normalize, eps 1e-12).
        let mut out = Vec::with_capacity(b);
        for s in 0..b {
            let mut e = vec![0f32; h];
            let mut count = 0f32;
            for pos in 0..l {
                if batch.mask[s * l + pos] != 0 {
                    let row = &hidden[(s * l + pos) * h..(s * l + pos + 1) * h];
                    for (a, x) in e.iter_mut().zip(row) {
                        *a += x;
                    }
                    count += 1.0;
                }
            }
            let count = count.max(1e-9);
            e.iter_mut().for_each(|a| *a /= count);
            let norm = e.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            e.iter_mut().for_each(|a| *a /= norm);
            out.push(e);
        }
        stats.total += start.elapsed();
        Ok(out)
    }

    /// Multi-head scaled dot-product attention of each sentence over its own real
    /// tokens (padded keys get probability 0, exactly as an additive -inf mask).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        lens: &[usize],
        l: usize,
        scores: &mut [f32],
        ctx: &mut [f32],
    ) {
        let h = self.cfg.hidden_size;
        let d = self.cfg.head_dim();
        let scale = 1.0 / (d as f32).sqrt();
        for (s, &len) in lens.iter().enumerate() {
            if len == 0 {
                // No real token (the tokenizer always adds [CLS] and [SEP], so only a
                // hand-made batch gets here): no context.
                for row in ctx[s * l * h..(s + 1) * l * h].chunks_exact_mut(h) {
                    row.fill(0.0);
                }
                continue;
            }
            for head in 0..self.cfg.num_attention_heads {
                let base = s * l * h + head * d;
                // scores[l x len] = scale * Q_sh (l x d) . K_sh^T (d x len)
                sgemm(
                    (l, d, len),
                    scale,
                    Operand::new(q, base, h, 1),
                    Operand::new(k, base, 1, h),
                    0.0,
                    (scores, 0, len, 1),
                );
                for row in scores[..l * len].chunks_exact_mut(len) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for x in row.iter_mut() {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|x| *x *= inv);
                }
                // ctx_sh (l x d) = P (l x len) . V_sh (len x d)
                sgemm(
                    (l, len, d),
                    1.0,
                    Operand::new(scores, 0, len, 1),
                    Operand::new(v, base, h, 1),
                    0.0,
                    (ctx, base, h, 1),
                );
            }
        }
    }
}
