//! # The ISA table
//!
//! Everything qlinear knows about an instruction set lives in two places, both tables:
//!
//! 1. **[`for_each_isa!`](crate::for_each_isa)** (this file): one line per ISA, best first:
//!    `Variant / name: "target_arch"`, with its doc line. It generates [`Isa`] (the typed
//!    backend of every [`KernelDesc`](crate::contract::KernelDesc)), its name
//!    ([`Isa::name`]), its rank (the line's position: Auto's preference, [`Isa::rank`]),
//!    its architecture ([`Isa::arch`]), and, in the `qlinear` crate, the matching
//!    `Backend` variant, `Backend::PREFERENCE`, `FromStr`, the error texts and one
//!    generated test module per ISA. Nothing else spells an ISA's name.
//! 2. **The kernel crate's [`IsaDesc`] entry** (`qlinear-kernels-x86`'s `isa.rs`,
//!    `qlinear-kernels-arm`'s `isa.rs`): the target-feature list, the runtime detection
//!    (CPU *and* OS enablement, as a function returning the reason when unavailable) and
//!    the peak probe of `qlinear bench`. Those are code for one architecture, so they live
//!    in the crate compiled for it; the API collects both crates' entries.
//!
//! Adding an ISA (AMX, SVE, SME, AVX10) therefore touches: one line in
//! [`for_each_isa!`](crate::for_each_isa), one [`IsaDesc`] entry in its kernel crate's
//! table, and the kernel file itself (with its `pub mod` line and its name in that crate's
//! `kernel_registry!`). `Backend`, `qlinear info`, the bench's probes, the error texts
//! and the generated tests follow.
//!
//! The dynamic-input helpers (`min_max`, `quantize`) stay on each
//! [`KernelDesc`](crate::contract::KernelDesc), where the driver calls them: on x86,
//! `kernel_descriptor!` instantiates the portable loops under the table entry's feature
//! list, so a new ISA gets vectorized helpers with no extra line; on aarch64 the
//! portable loops already vectorize with baseline NEON.
//!
//! ## Why detection is a function
//!
//! A feature-string check is not enough for every ISA. AMX, for example, is usable only
//! when CPUID.(7,0):EDX bits 24/25 are set, the OS has enabled the tile state in XCR0
//! (bits 17 and 18), and on Linux the process has been granted the tile data with
//! `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (once per process). So
//! [`IsaDesc::detect`] is an arbitrary `fn() -> Result<(), String>`: the x86 entries
//! check the feature list *and* the XCR0 register state, and an AMX entry would add the
//! permission request behind a `OnceLock`. The error is the human reason (`"CPU lacks
//! avx512vnni"`), which `qlinear info` prints for every unavailable backend.

/// The architecture an ISA belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `x86_64`.
    X86_64,
    /// `aarch64`.
    Aarch64,
}

impl Arch {
    /// The `target_arch` spelling: `"x86_64"`, `"aarch64"`.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The architecture this build targets, if it has ISAs in the table.
    pub const fn current() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// The architecture spelled `s` (a `target_arch` value), evaluated at compile time
    /// for every line of [`for_each_isa!`](crate::for_each_isa).
    const fn from_target_arch(s: &str) -> Arch {
        if same_str(s, "x86_64") {
            Arch::X86_64
        } else if same_str(s, "aarch64") {
            Arch::Aarch64
        } else {
            panic!("for_each_isa!: unknown target_arch")
        }
    }
}

/// The one list of ISAs, best first: calls `$callback!` with every line
/// `$(#[doc])* Variant / name: "target_arch";`.
///
/// The position of a line is the ISA's rank (Auto tries rank 0 first); `name` is the
/// name users type (`QLINEAR_BACKEND`, `--backend`) and the prefix of its kernels'
/// names; `target_arch` is the `cfg(target_arch)` its kernels compile under.
///
/// `qlinear_reference` instantiates [`Isa`] from it, `qlinear` its `Backend` variants
/// and its generated per-ISA test modules. A new ISA is one line here (see the
/// [module docs](crate::isa)).
#[macro_export]
macro_rules! for_each_isa {
    ($callback:ident) => {
        $callback! {
            /// x86 AMX-INT8 (`tdpbusd` on 16 x 64-byte tiles), AVX-512 epilogue.
            Amx / amx: "x86_64";
            /// x86 AVX-512 VNNI (`vpdpbusd zmm`).
            Avx512Vnni / avx512vnni: "x86_64";
            /// x86 AVX-VNNI (`vpdpbusd ymm`, VEX encoded).
            AvxVnni / avxvnni: "x86_64";
            /// x86 AVX2, exact (no `vpmaddubsw` saturation).
            Avx2 / avx2: "x86_64";
            /// aarch64 I8MM (`usmmla`).
            I8mm / i8mm: "aarch64";
            /// aarch64 NEON dot product (`sdot`/`udot`).
            NeonDot / neondot: "aarch64";
            /// aarch64 NEON (widening multiply-accumulate).
            Neon / neon: "aarch64";
        }
    };
}

macro_rules! define_isa {
    ($($(#[doc = $doc:literal])* $variant:ident / $name:ident: $arch:literal;)+) => {
        /// An instruction set with kernels: the typed backend of a
        /// [`KernelDesc`](crate::contract::KernelDesc). Generated from
        /// [`for_each_isa!`](crate::for_each_isa).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Isa {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Isa {
            /// Every ISA, best first (index = [`Isa::rank`]).
            pub const ALL: &'static [Isa] = &[$(Isa::$variant),+];

            /// The name users select it by (`avx512vnni`, `neondot`, ...), also the
            /// prefix of its kernels' names.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Isa::$variant => stringify!($name),)+
                }
            }

            /// The architecture whose builds compile its kernels.
            pub const fn arch(self) -> Arch {
                match self {
                    $(Isa::$variant => {
                        const ARCH: Arch = Arch::from_target_arch($arch);
                        ARCH
                    })+
                }
            }
        }
    };
}

for_each_isa!(define_isa);

impl Isa {
    /// Auto's preference: 0 is tried first (the ISA's position in
    /// [`for_each_isa!`](crate::for_each_isa)).
    pub const fn rank(self) -> usize {
        // Variants are declared in list order, so the discriminant is the position.
        self as usize
    }

    /// The ISA called `name` (exact, lowercase), if any.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.iter().copied().find(|i| i.name() == name)
    }

    /// Every ISA's name, best first, comma separated (for error texts).
    pub fn names() -> String {
        Isa::ALL
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// A probe loop: `iters` iterations of [`PEAK_ACCUMULATORS`] independent instructions of
/// the ISA's core MAC instruction; returns the MACs done.
///
/// # Safety
/// Only after the entry's [`IsaDesc::detect`] returned `Ok` (on the calling thread, for
/// ISAs whose state is per thread).
pub type PeakFn = unsafe fn(iters: u64) -> f64;

/// Independent accumulator chains per probe-loop iteration (every probe uses this many,
/// so it is throughput- rather than latency-bound).
pub const PEAK_ACCUMULATORS: u64 = 12;

/// The `qlinear bench` peak probe of one ISA: its core instruction mix in a loop.
#[derive(Debug, Clone, Copy)]
pub struct PeakProbe {
    /// What is timed, e.g. `"vpdpbusd zmm"`.
    pub instruction: &'static str,
    /// MACs per instruction (per pair for a two-instruction mix).
    pub macs_per_instr: u32,
    /// The loop.
    pub run: PeakFn,
}

/// One ISA's architecture-specific entry: what a kernel crate knows about it.
#[derive(Debug, Clone, Copy)]
pub struct IsaDesc {
    /// Which ISA (name, rank and architecture come from [`for_each_isa!`](crate::for_each_isa)).
    pub isa: Isa,
    /// The `#[target_feature(enable = "...")]` list of its kernels, comma separated.
    pub features: &'static str,
    /// Whether this CPU *and OS* can run it: `Err(reason)` (`"CPU lacks avx512vnni"`,
    /// `"the OS has not enabled the AVX-512 register state"`) when not. May do one-time
    /// work (an OS permission request); callers may call it more than once.
    pub detect: fn() -> Result<(), String>,
    /// The peak probe of `qlinear bench`, if the ISA has one.
    pub peak: Option<PeakProbe>,
}

impl IsaDesc {
    /// The entry of `isa` in `table` (a kernel crate's table), usable in constants.
    pub const fn find(table: &'static [IsaDesc], isa: Isa) -> Option<&'static IsaDesc> {
        let mut i = 0;
        while i < table.len() {
            if table[i].isa as u8 == isa as u8 {
                return Some(&table[i]);
            }
            i += 1;
        }
        None
    }

    /// [`IsaDesc::detect`], with the ISA's name in front of the reason
    /// (`"avx512vnni: CPU lacks avx512vnni"`).
    pub fn available(&self) -> Result<(), String> {
        (self.detect)().map_err(|why| format!("{}: {why}", self.isa.name()))
    }
}

/// Byte-wise string equality, usable in constants (the kernel crates check their
/// `#[target_feature]` lists against the table at compile time).
pub const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lowercase_and_round_trip() {
        for (rank, &isa) in Isa::ALL.iter().enumerate() {
            assert_eq!(isa.rank(), rank);
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
            assert_eq!(isa.name(), isa.name().to_ascii_lowercase());
            assert!(!["auto", "reference", "all"].contains(&isa.name()));
            let _ = isa.arch();
        }
        assert_eq!(Isa::from_name("sse9"), None);
        assert_eq!(Isa::Avx512Vnni.to_string(), "avx512vnni");
        assert_eq!(Isa::Neon.arch(), Arch::Aarch64);
        assert_eq!(Isa::Avx2.arch().name(), "x86_64");
    }
}
