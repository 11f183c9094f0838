//! # qlinear-kernels-x86
//!
//! The x86-64 kernels of qlinear, one file per ISA, each a
//! [`KernelDesc`] implementing the contract of [`qlinear_reference::contract`]:
//!
//! | kernel | core instruction | exactness |
//! |---|---|---|
//! | `amx/gemm_32x32c4` | `tdpbusd` on 16 x 64-byte tiles (inline asm), M >= 16, avx512vnni's packing | exact (i32 sums); detection ends with a known-answer self-test |
//! | `avx512vnni/gemm_8x32c4` | `vpdpbusd zmm` | exact (non-saturating form) |
//! | `avx512vnni/gemv_1x32c4` | `vpdpbusd zmm`, M = 1 (same packing) | exact |
//! | `avxvnni/gemm_6x16c4` | `vpdpbusd ymm` (VEX) | exact |
//! | `avx2/gemm_6x8c4` | `vpmovsxbw` + `vpmaddwd` + `vpaddd` | exact: no `vpmaddubsw` |
//!
//! All share the packed layout family "panels of NR columns, k-groups of 4"
//! (see [`qlinear_reference::contract::PackedLayout`]) and the loop nest of
//! `blocking` (private module). The list is empty on other architectures.
//!
//! ## Layout of the sources
//!
//! Every kernel file is ordinary Rust that `cargo fmt` formats: the modules are plain
//! `pub mod` items (x86-64 only), and each function compiled for an ISA carries a plain
//! `#[target_feature(enable = "...")]` with that ISA's feature list. The lists live in
//! `isa` (private module), the x86 half of the ISA table ([`isas()`]): one
//! [`IsaDesc`] per ISA with its feature list, its detection (CPU features and the XCR0
//! register state the OS enabled, returning the reason when unavailable) and its `qlinear
//! bench` peak probe (`peak`, private). `isa`'s unit tests check that every such
//! attribute in the kernel files (found through `kernel_registry!`) and in the helper
//! files equals its ISA's list. A file's `kernel_descriptor!` call generates its
//! [`KernelDesc`] static (with its typed [`Isa`](qlinear_reference::contract::Isa)), its
//! runtime check (the table entry's detection) and the dynamic-input helpers, and asserts
//! at compile time that the attribute it is given equals the table entry's list.
//!
//! ## Adding a kernel or an ISA
//!
//! A kernel of an existing ISA: its file (entry points `gemm_u8` / `gemm_f32` and a
//! `kernel_descriptor!` call naming its `isa`), its `pub mod` line below and one name in
//! the `kernel_registry!` call (which builds [`kernels()`], the kernel test
//! `registry_tests::<name>` and the file's entry in the attribute test).
//!
//! A new ISA (AMX, AVX10) touches exactly:
//!
//! 1. one line in [`qlinear_reference::for_each_isa!`] (`crates/reference/src/isa.rs`):
//!    its `Isa` and `Backend` variants, name, rank (position), architecture, `FromStr`,
//!    `PREFERENCE`, the error texts and its generated API test module follow;
//! 2. one [`IsaDesc`] entry in `isa`'s `TABLE` (its feature list `const`, its `detect`,
//!    its peak probe; a new std-detectable feature name also gets its line in
//!    `isa::detected`). AMX's `detect` checks CPUID.(7,0):EDX bits 24/25, XCR0 bits 17/18
//!    (`XCR0_AMX`) and requests `ARCH_REQ_XCOMP_PERM` once per process;
//! 3. its kernel file (which may hold its peak loop), with its `pub mod` line and its
//!    name in `kernel_registry!` below.
//!
//! `qlinear info`, `cpu_info`, the bench's peak probes and every generated test pick it
//! up from there. (Before the table, an ISA also touched the `Backend` enum, `PREFERENCE`,
//! `name()`, `cpu_info`'s list, `probe.rs`'s loops and dispatch, the error text in
//! `params.rs`, `tests/kernels.rs`, `tests/pack_exact.rs` and this crate's attribute
//! test.)
#![deny(clippy::print_stdout, clippy::print_stderr)]

use qlinear_reference::contract::KernelDesc;
use qlinear_reference::isa::IsaDesc;

/// Whether this CPU has the x86 target feature `feature` (one of the names in
/// [`isas()`]' feature lists), or `None` for a name this crate does not detect (every
/// name on other architectures).
pub fn feature_detected(feature: &str) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        isa::TABLE
            .iter()
            .any(|e| e.features.split(',').any(|f| f == feature))
            .then(|| isa::detected(feature))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        None
    }
}

/// The x86 half of the ISA table (one [`IsaDesc`] per x86 ISA, best first: feature list,
/// detection with its reason, peak probe). Empty on other architectures.
pub fn isas() -> &'static [IsaDesc] {
    #[cfg(target_arch = "x86_64")]
    {
        isa::TABLE
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        &[]
    }
}

#[cfg(target_arch = "x86_64")]
mod isa;

#[cfg(target_arch = "x86_64")]
pub(crate) mod blocking;

#[cfg(target_arch = "x86_64")]
mod epilogue256;

#[cfg(target_arch = "x86_64")]
mod epilogue512;

#[cfg(target_arch = "x86_64")]
mod pack;

#[cfg(target_arch = "x86_64")]
mod peak;

#[cfg(all(test, target_arch = "x86_64"))]
mod testing;

#[cfg(target_arch = "x86_64")]
pub mod amx;

/// AMX tile instructions executed in software through a `SIGILL` handler, so the AMX
/// kernel's real code runs on CPUs without AMX: for this crate's tests, and other
/// crates' tests with the `amx-emulation` feature. Never in a normal build.
#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    any(test, feature = "amx-emulation")
))]
pub mod amx_emulation;

#[cfg(target_arch = "x86_64")]
pub mod avx512vnni;

#[cfg(target_arch = "x86_64")]
pub mod avx512vnni_gemv;

#[cfg(target_arch = "x86_64")]
pub mod avxvnni;

#[cfg(target_arch = "x86_64")]
pub mod avx2;

/// The kernel registry: one line per kernel module, best first. Generates [`kernels()`]
/// and one kernel-level test per kernel, `registry_tests::<module>` (the criterion
/// benches and the API's backend tests iterate [`kernels()`]). The modules themselves are
/// ordinary `pub mod` items above, so that `cargo fmt` formats them.
macro_rules! kernel_registry {
    ($($module:ident),* $(,)?) => {
        /// One kernel-level test per registered kernel.
        #[cfg(all(test, target_arch = "x86_64"))]
        mod registry_tests {
            $(
                #[test]
                fn $module() {
                    crate::testing::check_kernel(&crate::$module::KERNEL);
                }
            )*
        }

        /// Every kernel file with its source and its ISA, for `isa`'s attribute test.
        #[cfg(all(test, target_arch = "x86_64"))]
        pub(crate) const KERNEL_SOURCES: &[(
            &str,
            &str,
            qlinear_reference::contract::Isa,
        )] = &[$((
            concat!(stringify!($module), ".rs"),
            include_str!(concat!(stringify!($module), ".rs")),
            $module::KERNEL.isa,
        )),*];

        /// Every kernel of this crate, best first. Empty on other architectures.
        pub fn kernels() -> &'static [KernelDesc] {
            #[cfg(target_arch = "x86_64")]
            {
                static KERNELS: &[KernelDesc] = &[$($module::KERNEL),*];
                KERNELS
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                &[]
            }
        }
    };
}

kernel_registry! {
    amx,
    avx512vnni,
    avx512vnni_gemv,
    avxvnni,
    avx2,
}
