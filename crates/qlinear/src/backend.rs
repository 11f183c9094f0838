//! Backend names, CPU feature detection (once) and kernel selection.
//!
//! Selection happens when a layer is built, never per call: the chosen
//! [`KernelDesc`] is stored in the layer's [`crate::PackedWeights`], and every forward
//! call is a single indirect call through it.

use std::sync::OnceLock;

use qlinear_reference::contract::KernelDesc;
use qlinear_reference::Error;

/// The environment variable that overrides [`Backend::Auto`].
pub const BACKEND_ENV: &str = "QLINEAR_BACKEND";

/// Which implementation runs a layer.
///
/// Every backend gives the same bits; they differ in speed and in which CPUs run them.
/// `Auto` picks the best one this CPU has (or the one named by the `QLINEAR_BACKEND`
/// environment variable); forcing a backend the CPU lacks is an
/// [`Error::BackendUnavailable`], never a crash.
///
/// ```
/// use qlinear::{available_backends, Backend};
///
/// // What this machine runs, best first; the scalar reference is always last.
/// let here = available_backends();
/// assert_eq!(here.last(), Some(&Backend::Reference));
///
/// // Names round-trip through `FromStr`, as on the command line.
/// let b: Backend = "avx512vnni".parse()?;
/// assert_eq!(b, Backend::Avx512Vnni);
/// assert!("sse9".parse::<Backend>().is_err());
/// # Ok::<(), qlinear::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// The best kernel this CPU supports (or `QLINEAR_BACKEND` when set).
    #[default]
    Auto,
    /// The literal scalar oracle (`qlinear-reference`): slow, always available.
    Reference,
    /// x86 AVX2, exact (no `vpmaddubsw` saturation).
    Avx2,
    /// x86 AVX-VNNI (`vpdpbusd ymm`, VEX encoded).
    AvxVnni,
    /// x86 AVX-512 VNNI (`vpdpbusd zmm`).
    Avx512Vnni,
    /// aarch64 NEON (widening multiply-accumulate).
    Neon,
    /// aarch64 NEON dot product (`sdot`/`udot`).
    NeonDot,
    /// aarch64 I8MM (`usmmla`).
    I8mm,
}

impl Backend {
    /// Every concrete backend, in Auto's order of preference (reference last).
    pub const PREFERENCE: [Backend; 7] = [
        Backend::Avx512Vnni,
        Backend::AvxVnni,
        Backend::Avx2,
        Backend::I8mm,
        Backend::NeonDot,
        Backend::Neon,
        Backend::Reference,
    ];

    /// The name used on the command line, in `QLINEAR_BACKEND` and in kernel names.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Reference => "reference",
            Backend::Avx2 => "avx2",
            Backend::AvxVnni => "avxvnni",
            Backend::Avx512Vnni => "avx512vnni",
            Backend::Neon => "neon",
            Backend::NeonDot => "neondot",
            Backend::I8mm => "i8mm",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name()) // honours width and alignment: `{backend:<10}`
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim().to_ascii_lowercase();
        std::iter::once(Backend::Auto)
            .chain(Backend::PREFERENCE)
            .find(|b| b.name() == s)
            .ok_or(Error::UnknownBackend(s))
    }
}

/// What actually runs a layer: the oracle, or one kernel.
#[derive(Debug, Clone, Copy)]
pub enum Engine {
    /// The literal reference implementation.
    Reference,
    /// An optimized kernel.
    Kernel(&'static KernelDesc),
}

impl Engine {
    /// The kernel's full name (`"avx512vnni/gemm_8x32c4"`), or `"reference"`.
    pub fn kernel_name(&self) -> &'static str {
        match self {
            Engine::Reference => "reference",
            Engine::Kernel(k) => k.name,
        }
    }
    /// The backend this engine belongs to.
    pub fn backend(&self) -> Backend {
        match self {
            Engine::Reference => Backend::Reference,
            Engine::Kernel(k) => k.backend.parse().unwrap_or(Backend::Reference),
        }
    }
}

/// Every kernel compiled into this build (whatever the CPU supports).
pub fn compiled_kernels() -> impl Iterator<Item = &'static KernelDesc> {
    qlinear_kernels_x86::kernels()
        .iter()
        .chain(qlinear_kernels_arm::kernels())
}

/// Kernels this CPU can run, detected once and cached.
fn supported_kernels() -> &'static [&'static KernelDesc] {
    static SUPPORTED: OnceLock<Vec<&'static KernelDesc>> = OnceLock::new();
    SUPPORTED.get_or_init(|| compiled_kernels().filter(|k| (k.is_supported)()).collect())
}

/// The engine for a concrete (non-Auto) backend, or why it cannot run here.
fn engine_for(backend: Backend) -> Result<Engine, Error> {
    match backend {
        Backend::Reference => Ok(Engine::Reference),
        Backend::Auto => Ok(best_engine()),
        b => supported_kernels()
            .iter()
            .find(|k| k.backend == b.name())
            .map(|k| Engine::Kernel(k))
            .ok_or_else(|| Error::BackendUnavailable(b.name().to_string())),
    }
}

fn best_engine() -> Engine {
    Backend::PREFERENCE
        .iter()
        .find_map(|&b| engine_for(b).ok())
        .unwrap_or(Engine::Reference)
}

/// Resolves a backend choice: `Auto` honours `QLINEAR_BACKEND` (an unknown or unavailable
/// name there, or a value that is not UTF-8, is an error, not a silent fallback), then
/// picks the best supported kernel.
pub fn resolve(backend: Backend) -> Result<Engine, Error> {
    if backend == Backend::Auto {
        if let Some(value) = std::env::var_os(BACKEND_ENV) {
            let Some(name) = value.to_str() else {
                return Err(Error::UnknownBackend(format!(
                    "{value:?} (the value of {BACKEND_ENV} is not valid UTF-8)"
                )));
            };
            if !name.trim().is_empty() {
                let b: Backend = name.parse()?;
                if b != Backend::Auto {
                    return engine_for(b);
                }
            }
        }
        return Ok(best_engine());
    }
    engine_for(backend)
}

/// Backends this CPU can run, best first (`reference` always last).
pub fn available_backends() -> Vec<Backend> {
    Backend::PREFERENCE
        .into_iter()
        .filter(|&b| engine_for(b).is_ok())
        .collect()
}

/// CPU facts relevant to qlinear, for `qlinear info` and bench reports.
#[derive(Debug, Clone)]
pub struct CpuInfo {
    /// Model name (from `/proc/cpuinfo` where available).
    pub model: String,
    /// `(feature, detected)` for avx2, avxvnni, avx512vnni, neon, dotprod, i8mm.
    pub features: Vec<(&'static str, bool)>,
}

/// Detects the CPU model and the features qlinear cares about.
pub fn cpu_info() -> CpuInfo {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| {
                    l.starts_with("model name")
                        || l.starts_with("Model")
                        || l.starts_with("CPU part")
                })
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    CpuInfo {
        model,
        features: detected_features(),
    }
}

#[cfg(target_arch = "x86_64")]
fn detected_features() -> Vec<(&'static str, bool)> {
    vec![
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("avxvnni", std::arch::is_x86_feature_detected!("avxvnni")),
        ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
        (
            "avx512vnni",
            std::arch::is_x86_feature_detected!("avx512vnni"),
        ),
        ("neon", false),
        ("dotprod", false),
        ("i8mm", false),
    ]
}

#[cfg(target_arch = "aarch64")]
fn detected_features() -> Vec<(&'static str, bool)> {
    vec![
        ("avx2", false),
        ("avxvnni", false),
        ("avx512vnni", false),
        ("neon", std::arch::is_aarch64_feature_detected!("neon")),
        (
            "dotprod",
            std::arch::is_aarch64_feature_detected!("dotprod"),
        ),
        ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
    ]
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detected_features() -> Vec<(&'static str, bool)> {
    Vec::new()
}
