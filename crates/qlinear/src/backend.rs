//! Backend names, CPU feature detection (once) and kernel selection.
//!
//! Selection happens when a layer is built, never per call: the chosen
//! [`KernelDesc`] is stored in the layer's [`crate::PackedWeights`], and every forward
//! call is a single indirect call through it.

use std::sync::OnceLock;

use qlinear_reference::contract::{Isa, KernelDesc};
use qlinear_reference::isa::IsaDesc;
use qlinear_reference::Error;

/// The environment variable that overrides [`Backend::Auto`].
pub const BACKEND_ENV: &str = "QLINEAR_BACKEND";

/// Generates [`Backend`] from the ISA table's list ([`qlinear_reference::for_each_isa!`]):
/// `Auto`, `Reference`, then one variant per ISA, with its docs.
macro_rules! define_backend {
    ($($(#[doc = $doc:literal])* $variant:ident / $name:ident: $arch:literal;)+) => {
        /// Which implementation runs a layer.
        ///
        /// Every backend gives the same bits; they differ in speed and in which CPUs run
        /// them. `Auto` picks the best one this CPU has (or the one named by the
        /// `QLINEAR_BACKEND` environment variable); forcing a backend the CPU lacks is an
        /// [`Error::BackendUnavailable`], never a crash ([`Backend::availability`] says
        /// why). One variant per [`Isa`], generated from the ISA table.
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
            $($(#[doc = $doc])* $variant,)+
        }

        impl Backend {
            /// Every concrete backend, in Auto's order of preference (the ISA table's
            /// ranks), reference last.
            pub const PREFERENCE: [Backend; Isa::ALL.len() + 1] =
                [$(Backend::$variant,)+ Backend::Reference];

            /// The backend's ISA, or `None` for `Auto` and `Reference`.
            pub const fn isa(self) -> Option<Isa> {
                match self {
                    $(Backend::$variant => Some(Isa::$variant),)+
                    Backend::Auto | Backend::Reference => None,
                }
            }

            /// The backend of an ISA.
            pub const fn from_isa(isa: Isa) -> Backend {
                match isa {
                    $(Isa::$variant => Backend::$variant,)+
                }
            }
        }
    };
}

qlinear_reference::for_each_isa!(define_backend);

impl Backend {
    /// The name used on the command line, in `QLINEAR_BACKEND` and in kernel names
    /// ([`Isa::name`] for an ISA's backend).
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Reference => "reference",
            b => match b.isa() {
                Some(isa) => isa.name(),
                None => "reference",
            },
        }
    }

    /// Whether this CPU, OS and build can run the backend: `Ok`, or the reason it
    /// cannot (`"avx512vnni: CPU lacks avx512vnni"`, `"neon: aarch64 only (this build
    /// is for x86_64)"`), from the ISA table's detection. `Auto` and `Reference` are
    /// always available.
    pub fn availability(self) -> Result<(), String> {
        let Some(isa) = self.isa() else {
            return Ok(());
        };
        let Some(entry) = isa_entry(isa) else {
            return Err(format!(
                "{isa}: {} only (this build is for {})",
                isa.arch().name(),
                std::env::consts::ARCH
            ));
        };
        entry.available()?;
        if !compiled_kernels().any(|k| k.isa == isa) {
            return Err(format!("{isa}: no kernel compiled into this build"));
        }
        Ok(())
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
            Engine::Kernel(k) => Backend::from_isa(k.isa),
        }
    }
}

/// Every ISA table entry compiled into this build (the x86 and aarch64 kernel crates'
/// halves; only the target architecture's is non-empty), best first.
pub fn isa_table() -> impl Iterator<Item = &'static IsaDesc> {
    qlinear_kernels_x86::isas()
        .iter()
        .chain(qlinear_kernels_arm::isas())
}

/// The table entry of `isa`, when this build has one.
pub fn isa_entry(isa: Isa) -> Option<&'static IsaDesc> {
    isa_table().find(|e| e.isa == isa)
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
            .find(|k| Some(k.isa) == b.isa())
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
    /// `(feature, detected)` for every target feature of this build's ISA table entries
    /// (x86: avx512f, avx512bw, avx512vl, avx512vnni, avx2, fma, avxvnni; aarch64: neon,
    /// i8mm, dotprod).
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

/// The target features of every ISA table entry of this build, once each, in table
/// order, with whether this CPU has them.
fn detected_features() -> Vec<(&'static str, bool)> {
    let mut out: Vec<(&'static str, bool)> = Vec::new();
    for entry in isa_table() {
        for feature in entry.features.split(',') {
            if !out.iter().any(|&(f, _)| f == feature) {
                let on = qlinear_kernels_x86::feature_detected(feature)
                    .or_else(|| qlinear_kernels_arm::feature_detected(feature))
                    .unwrap_or(false);
                out.push((feature, on));
            }
        }
    }
    out
}
