//! The one place where the encoder's `nn.Linear` layers are built, and the f32 GEMM.
//!
//! [`make_linear`] turns a checkpoint's f32 weight and bias into a [`Layer`]: a
//! [`qlinear::DynamicLinear`] (int8 weights, activations quantized per call, as torch's
//! `nn.quantized.dynamic.Linear`) or, for the `--f32` baseline, the same product in
//! f32 through `matrixmultiply::sgemm`. Every one of the encoder's 36 linear layers
//! goes through it, so a new way of building quantized layers lands here only.

use crate::{Error, Result};
use qlinear::safetensors::Checkpoint as QCheckpoint;
use qlinear::{DynamicLinear, DynamicLinearBuilder, InputQuantization, MatMut, MatRef, Observer};

/// How the encoder's linear layers compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Precision {
    /// f32 weights, f32 GEMM (`matrixmultiply::sgemm`): the baseline.
    F32,
    /// qlinear int8: weights quantized once by `observer`, activations per call.
    Int8 {
        /// Weight quantization (per channel or per tensor, symmetric).
        observer: Observer,
        /// torch's `reduce_range`: activations on [0, 127] instead of [0, 255].
        reduce_range: bool,
        /// One activation scale per call over the whole `batch x seq_len` matrix
        /// (torch), or one per row, i.e. per token (`--per-row`).
        input_quantization: InputQuantization,
    },
}

/// Settings for building an encoder: the precision of its linear layers and threads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// f32 or int8 (and how).
    pub precision: Precision,
    /// Worker threads of each qlinear layer (0 = all of rayon's pool). The f32 GEMM
    /// (`matrixmultiply` without its `threading` feature) always runs on one thread.
    pub threads: usize,
}

impl Settings {
    /// qlinear's defaults here: per-channel symmetric weights, full-range activations.
    pub fn int8() -> Self {
        Settings {
            precision: Precision::Int8 {
                observer: Observer::PER_CHANNEL_SYMMETRIC,
                reduce_range: false,
                input_quantization: InputQuantization::PerTensor,
            },
            threads: 1,
        }
    }

    /// torch's defaults for `quantize_dynamic` on fbgemm: per-tensor symmetric weights,
    /// reduced-range activations.
    pub fn int8_torch_default() -> Self {
        Settings {
            precision: Precision::Int8 {
                observer: Observer::PER_TENSOR_SYMMETRIC,
                reduce_range: true,
                input_quantization: InputQuantization::PerTensor,
            },
            threads: 1,
        }
    }

    /// The f32 baseline.
    pub fn f32() -> Self {
        Settings {
            precision: Precision::F32,
            threads: 1,
        }
    }

    /// The same settings with `threads` worker threads.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// The same settings with activations quantized per row (int8 only; f32 is left
    /// as it is).
    pub fn with_per_row(mut self) -> Self {
        if let Precision::Int8 {
            input_quantization, ..
        } = &mut self.precision
        {
            *input_quantization = InputQuantization::PerRow;
        }
        self
    }

    /// A short name: `f32`, `int8-per-channel`, `int8-per-tensor-reduce-range`,
    /// `int8-per-channel-per-row`, ...
    pub fn label(&self) -> String {
        match self.precision {
            Precision::F32 => "f32".to_string(),
            Precision::Int8 {
                observer,
                reduce_range,
                input_quantization,
            } => {
                let granularity = if observer == Observer::PER_CHANNEL_SYMMETRIC {
                    "per-channel"
                } else if observer == Observer::PER_TENSOR_SYMMETRIC {
                    "per-tensor"
                } else {
                    "custom-observer"
                };
                let rr = if reduce_range { "-reduce-range" } else { "" };
                let rows = match input_quantization {
                    InputQuantization::PerTensor => "",
                    InputQuantization::PerRow => "-per-row",
                };
                format!("int8-{granularity}{rr}{rows}")
            }
        }
    }
}

/// An f32 linear layer: `y = x W^T + b` with `W` as stored by torch (`[out, in]`).
#[derive(Debug, Clone)]
pub struct F32Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    out_features: usize,
    in_features: usize,
}

/// One of the encoder's linear layers.
#[derive(Debug, Clone)]
pub enum Layer {
    /// qlinear's dynamic int8 layer.
    Int8(DynamicLinear),
    /// The f32 baseline.
    F32(F32Linear),
}

impl Layer {
    /// `y[m, out] = x[m, in] W^T + b`, dense row-major buffers.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        match self {
            Layer::Int8(layer) => {
                let (k, n) = (layer.packed().in_features(), layer.packed().out_features());
                let input = MatRef::dense(&x[..m * k], m, k)?;
                let output = MatMut::dense(&mut y[..m * n], m, n)?;
                layer.forward(input, output)?;
            }
            Layer::F32(l) => {
                let (k, n) = (l.in_features, l.out_features);
                for row in y[..m * n].chunks_exact_mut(n) {
                    row.copy_from_slice(&l.bias);
                }
                // x: m x k row-major; W^T: element (kk, j) = W[j * k + kk].
                sgemm(
                    (m, k, n),
                    1.0,
                    Operand::new(&x[..m * k], 0, k, 1),
                    Operand::new(&l.weight, 0, 1, k),
                    1.0,
                    (&mut y[..m * n], 0, n, 1),
                );
            }
        }
        Ok(())
    }

    /// qlinear's kernel for this layer, or `f32 sgemm`.
    pub fn kernel_name(&self) -> &'static str {
        match self {
            Layer::Int8(l) => l.kernel_name(),
            Layer::F32(_) => "f32 sgemm (matrixmultiply)",
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        match self {
            Layer::Int8(l) => l.packed().out_features(),
            Layer::F32(l) => l.out_features,
        }
    }
}

/// Builds one linear layer (torch `nn.Linear(in_features, out_features)`, weight
/// `[out, in]` row-major) with `settings`. `name` is the checkpoint prefix, for errors.
///
/// A checkpoint that already holds the layer quantized (`qlinear quantize`) goes
/// through [`load_quantized_linear`] instead.
pub fn make_linear(
    name: &str,
    weight: Vec<f32>,
    out_features: usize,
    in_features: usize,
    bias: Vec<f32>,
    settings: &Settings,
) -> Result<Layer> {
    let qerr = |source| Error::Qlinear {
        layer: name.to_string(),
        source,
    };
    match settings.precision {
        Precision::F32 => Ok(Layer::F32(F32Linear {
            weight,
            bias,
            out_features,
            in_features,
        })),
        Precision::Int8 { observer, .. } => {
            let builder = DynamicLinear::from_float(&weight, out_features, in_features, observer)
                .map_err(qerr)?
                .bias(bias);
            Ok(Layer::Int8(
                apply_run_settings(builder, settings)
                    .build()
                    .map_err(qerr)?,
            ))
        }
    }
}

/// The run's activation-side settings on a builder: `reduce_range`, input quantization,
/// threads. Shared by both ways of building an int8 layer, so that they differ in where
/// the weight comes from only.
fn apply_run_settings(builder: DynamicLinearBuilder, settings: &Settings) -> DynamicLinearBuilder {
    let builder = builder.threads(settings.threads);
    match settings.precision {
        Precision::Int8 {
            reduce_range,
            input_quantization,
            ..
        } => builder
            .reduce_range(reduce_range)
            .input_quantization(input_quantization),
        Precision::F32 => builder,
    }
}

/// Builds one linear layer from a checkpoint that holds it already quantized: `P.weight`
/// (`I8`, `[out, in]`), `P.weight_scale`, `P.weight_zero_point`, `P.bias`, as written
/// by `qlinear quantize` or `DynamicLinear::write_safetensors`, packed straight from
/// `ck`'s (memory-mapped) bytes by `DynamicLinear::from_safetensors`.
///
/// # Precedence
///
/// The file decides the weight (int8 values and their scales and zero points, so
/// per-channel or per-tensor, symmetric or affine, whatever it was quantized with: the
/// run's weight observer does not apply), the bias and the profile. The run's
/// `settings` decide how activations are quantized at run time, `reduce_range` and
/// per-tensor or per-row, and threads: they override any `qlinear.P.reduce_range` /
/// `qlinear.P.input_quantization` in the file's metadata, so that one set of
/// command-line flags means the same thing on a float and on a quantized checkpoint.
///
/// `prefix` is the layer's full name in the file (`name` with the checkpoint's `bert.`
/// prefix, if any).
///
/// # Errors
/// [`Error::Checkpoint`] for an f32 run (the file has no float weights for this
/// layer), a layer without bias, a fused ReLU or a shape other than
/// `[out_features, in_features]`; [`Error::Qlinear`] (naming the layer, and the tensor
/// or metadata key at fault) when qlinear rejects the stored tensors.
pub fn load_quantized_linear(
    ck: &QCheckpoint<'_>,
    path: &std::path::Path,
    prefix: &str,
    out_features: usize,
    in_features: usize,
    settings: &Settings,
) -> Result<Layer> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    if settings.precision == Precision::F32 {
        return Err(bad(format!(
            "tensor {prefix}.weight is int8 (a quantized checkpoint): the f32 mode needs \
             the float weights; run int8, or give the float model.safetensors"
        )));
    }
    let qerr = |source| Error::Qlinear {
        layer: prefix.to_string(),
        source,
    };
    let builder = DynamicLinear::from_safetensors(ck, prefix).map_err(qerr)?;
    let layer = apply_run_settings(builder, settings)
        .build()
        .map_err(qerr)?;
    let (n, k) = (layer.packed().out_features(), layer.packed().in_features());
    if (n, k) != (out_features, in_features) {
        return Err(bad(format!(
            "tensor {prefix}.weight has shape [{n}, {k}], expected [{out_features}, {in_features}]"
        )));
    }
    if layer.bias().is_none() {
        return Err(bad(format!("tensor {prefix}.bias is missing")));
    }
    if layer.relu() {
        return Err(bad(format!(
            "metadata qlinear.{prefix}.relu is true: BERT's linear layers have no ReLU"
        )));
    }
    Ok(Layer::Int8(layer))
}

/// A strided read-only matrix operand: `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    data: &'a [f32],
    offset: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    pub(crate) fn new(
        data: &'a [f32],
        offset: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        Operand {
            data,
            offset,
            row_stride,
            col_stride,
        }
    }
}

/// Index one past the last element a `rows x cols` strided view touches.
fn extent(offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        offset
    } else {
        offset + (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `C = alpha * A B + beta * C` for strided `A` (m x k), `B` (k x n), `C` (m x n):
/// a bounds-checked wrapper of `matrixmultiply::sgemm` (AVX2/FMA picked at runtime).
/// `c` is `(data, offset, row_stride, col_stride)`.
pub(crate) fn sgemm(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: (&mut [f32], usize, usize, usize),
) {
    let (c_data, c_off, rsc, csc) = c;
    assert!(extent(a.offset, m, k, a.row_stride, a.col_stride) <= a.data.len());
    assert!(extent(b.offset, k, n, b.row_stride, b.col_stride) <= b.data.len());
    assert!(extent(c_off, m, n, rsc, csc) <= c_data.len());
    if m == 0 || n == 0 {
        return;
    }
    let s = |v: usize| isize::try_from(v).expect("stride fits isize");
    // SAFETY: the asserts above keep every element that sgemm reads (A, B) or writes
    // (C) inside its slice; `c_data` is borrowed mutably, so C aliases neither A nor B;
    // the offsets are in bounds (or the view is empty and sgemm returns early above).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr().add(a.offset),
            s(a.row_stride),
            s(a.col_stride),
            b.data.as_ptr().add(b.offset),
            s(b.row_stride),
            s(b.col_stride),
            beta,
            c_data.as_mut_ptr().add(c_off),
            s(rsc),
            s(csc),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_and_int8_layers_agree_roughly() {
        let (out_f, in_f, m) = (7, 13, 5);
        let w: Vec<f32> = (0..out_f * in_f).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..out_f).map(|i| i as f32 * 0.1 - 0.3).collect();
        let x: Vec<f32> = (0..m * in_f).map(|i| (i as f32 * 0.11).cos()).collect();
        // Naive reference.
        let mut want = vec![0f32; m * out_f];
        for i in 0..m {
            for j in 0..out_f {
                let dot: f32 = (0..in_f).map(|t| x[i * in_f + t] * w[j * in_f + t]).sum();
                want[i * out_f + j] = dot + b[j];
            }
        }
        for settings in [Settings::f32(), Settings::int8()] {
            let layer = make_linear("t", w.clone(), out_f, in_f, b.clone(), &settings).unwrap();
            let mut y = vec![0f32; m * out_f];
            layer.forward(&x, m, &mut y).unwrap();
            let tol = if settings.precision == Precision::F32 {
                1e-4
            } else {
                0.1
            };
            for (g, e) in y.iter().zip(&want) {
                assert!((g - e).abs() < tol, "{}: {g} vs {e}", settings.label());
            }
        }
    }
}
