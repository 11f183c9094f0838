//! # qlinear: exact int8 linear layers
//!
//! What `torch.ao.nn.quantized.Linear`, `LinearReLU` and
//! `torch.ao.nn.quantized.dynamic.Linear` compute, bit for bit (see the
//! [`Profile`]s), with weights packed once for the best kernel of the CPU it runs on.
//!
//! * [`Linear`]: static, u8 activations -> u8 outputs, optional fused ReLU.
//! * [`DynamicLinear`]: f32 -> f32, input quantized per call like PyTorch.
//! * [`QuantizedWeight`] / [`PackedWeights`]: int8 weights with per-tensor or
//!   per-channel qparams, packed for one kernel; `from_float` with torch's observers.
//! * [`Backend`]: `Auto` (best detected kernel, or `QLINEAR_BACKEND`) or a named one;
//!   [`available_backends`] lists what this CPU runs.
//!
//! Unlike fbgemm, MLAS or oneDNN on AVX2, no kernel here ever saturates an
//! intermediate: every backend, thread count and M gives the reference's exact bits.
//! Invalid input is an [`Error`], never a panic.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// The README's usage example, compiled and run as a doctest.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod driver;
mod linear;
mod packed;
mod packing;

pub use backend::{
    available_backends, compiled_kernels, cpu_info, resolve, Backend, CpuInfo, Engine, BACKEND_ENV,
};
pub use linear::{DynamicLinear, DynamicLinearBuilder, Linear, LinearBuilder, SCRATCH_KEEP_BYTES};
pub use packed::{PackedWeights, QuantizedWeight};
pub use qlinear_reference::contract::KernelDesc;
pub use qlinear_reference::{
    ActQParams, Error, MatMut, MatRef, Observer, Profile, Result, WeightQParams, K_LIMIT,
};
