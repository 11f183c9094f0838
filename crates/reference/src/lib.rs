//! # qlinear-reference: the oracle
//!
//! This crate is the arithmetic contract of qlinear written as plain, obviously-correct
//! Rust (`#![forbid(unsafe_code)]`; the one exception is the opt-in kernel test
//! harness, `testkit::kernel`, behind the `kernel-harness` feature). Every optimized
//! kernel in the workspace is tested bit for bit against the functions here, so they
//! follow the normative text (`docs/semantics.md` in the repository) literally, one
//! rounding at a time, and never try to be fast.
//!
//! What lives here:
//!
//! * [`params`]: quantization parameters ([`ActQParams`], [`WeightQParams`]), the two
//!   arithmetic [`Profile`]s and their validation (the one [`Error`] type of qlinear).
//! * [`matrix`]: strided row-major views ([`MatRef`], [`MatMut`]) used by every API.
//! * [`linear`]: the literal static (u8 -> u8) and dynamic (f32 -> f32) linear layers.
//! * [`quantize`]: PyTorch's dynamic input qparams, quantize / dequantize, and the
//!   weight observers behind `from_float`. [`ActQParams::quantize`] /
//!   [`ActQParams::dequantize`] are torch's `quantize_per_tensor` / `dequantize()`.
//! * [`observer`]: the activation observers ([`MinMaxObserver`],
//!   [`MovingAverageMinMaxObserver`]) that choose a static layer's input and output
//!   qparams from calibration data.
//! * [`contract`]: what a SIMD kernel implements: the packed-layout descriptor, the
//!   kernel descriptor, the call arguments, and the *folded* epilogue parameters
//!   (zero points and bias turned into per-column constants). The folded form is proven
//!   equal to the literal one by this crate's tests, so kernels only ever see the folded
//!   form.
//! * [`isa`]: the ISA table: [`isa::Isa`] (a kernel's typed backend: name, rank,
//!   architecture) generated from the one list [`for_each_isa!`], and the per-architecture
//!   entry type [`isa::IsaDesc`] (target features, detection with its reason, peak probe)
//!   the kernel crates fill in. Its docs list every place a new ISA touches.
//! * [`pack`]: the portable packer / unpacker for any [`contract::PackedLayout`].
//! * [`testkit`]: deterministic random cases and the edge catalogue shared by every
//!   kernel's tests; with the `kernel-harness` feature, `testkit::kernel`: the
//!   kernel-level test harness every kernel crate runs its kernels through.
//!
//! The crate depends on nothing else in the workspace; data flows one way
//! (API -> kernels -> this contract).
// The oracle has no unsafe code. The one exception is the kernel test harness behind
// the `kernel-harness` feature (`testkit::kernel`), which calls kernels through their
// `unsafe fn` entry points: there the lint is allowed for that module alone.
#![cfg_attr(not(feature = "kernel-harness"), forbid(unsafe_code))]
#![cfg_attr(feature = "kernel-harness", deny(unsafe_code))]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod activation;
pub mod contract;
pub mod isa;
pub mod linear;
pub mod matrix;
pub mod observer;
pub mod pack;
pub mod params;
pub mod quantize;
pub mod testkit;

pub use linear::{dynamic_linear, dynamic_linear_per_row, integer_core, static_linear};
pub use matrix::{MatMut, MatRef};
pub use observer::{ActivationObserver, MinMaxObserver, MovingAverageMinMaxObserver};
pub use params::{ActQParams, Error, Profile, Result, WeightQParams, K_LIMIT};
pub use quantize::{
    choose_dynamic_qparams, dequantize, observe_weight, quantize_activations, quantize_weight,
    DynamicQParams, Observer,
};

/// `cvt(y)` of `docs/semantics.md`: f32 -> i32, round half to even, saturating to the i32 range.
/// NaN maps to 0 (Rust's `as` semantics); kernels reproduce this exactly.
#[inline]
pub fn cvt(y: f32) -> i32 {
    y.round_ties_even() as i32
}

/// Fused ReLU on a float output: `x > 0 ? x : +0.0` (so `-0.0` and NaN become `+0.0`,
/// exactly what `maxps(x, 0)` gives on x86 and `fmaxnm`-free NEON code reproduces).
#[inline]
pub fn relu_f32(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}
