//! aarch64 kernels for qlinear: plain NEON, NEON dot product and I8MM.
//!
//! | kernel                 | backend   | instruction            | MACs / instruction |
//! |------------------------|-----------|------------------------|--------------------|
//! | `i8mm/gemm_4x16c8`     | `i8mm`    | `usmmla` (u8 x s8)     | 32                 |
//! | `neondot/gemm_4x16c4`  | `neondot` | `sdot` (a ^ 0x80)      | 16                 |
//! | `neon/gemm_4x16c1`     | `neon`    | `smlal` by lane (i16)  | 4                  |
//!
//! Every kernel computes the exact integer product `sum_k a[m,k] * w[n,k]` of the kernel
//! contract ([`qlinear_reference::contract`]) for one panel of 16 columns and up to 4 rows
//! at a time, then runs the shared vectorized epilogue (`common.rs`), which reproduces
//! `StaticEpilogue::apply` / `DynamicEpilogue::apply` bit for bit. Each kernel file's
//! header documents its tile, register budget, packed layout, read extent and instruction
//! mix.
//!
//! The crate is empty on other architectures: [`kernels`] returns an empty slice.
//!
//! Every source file is ordinary Rust that `cargo fmt` formats: the kernel modules are
//! plain `pub mod` items (aarch64 only). Each kernel file's `entry_points!` call names its
//! [`Isa`](qlinear_reference::contract::Isa) and takes its feature list once (e.g.
//! `entry_points!(NeonDot, ["neon", "dotprod"], gemm)`): it generates the
//! `#[target_feature]` entry points `gemm_u8` / `gemm_f32`, asserts at compile time that
//! the list equals the ISA's table entry (`isa`, private: the aarch64 half of the ISA
//! table, [`isas`]) and makes `is_supported` that entry's detection, so the three cannot
//! disagree; the rest of the kernel is `#[inline(always)]` code inlined into those entry
//! points.
//!
//! Adding a kernel of an existing ISA: a new file (its `DESC` with `isa`, an
//! `entry_points!` call and the body it names), its `pub mod` line in this file, and one
//! name in the `kernel_registry!` invocation below, which builds the kernel table and the
//! per-kernel tests.
//!
//! A new ISA (SVE, SME) touches exactly: one line in
//! [`qlinear_reference::for_each_isa!`] (name, rank, architecture, `Backend` variant,
//! error texts and API tests follow), one [`IsaDesc`] entry in `isa`'s `TABLE` (feature
//! list, `detect` returning the reason, peak probe; a new feature name also gets its line
//! in `isa::detected`), and its kernel file with the lines above. `qlinear info`, the
//! bench's probes and the generated tests pick it up from there.
#![cfg_attr(not(target_arch = "aarch64"), allow(unused))]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use qlinear_reference::contract::KernelDesc;
use qlinear_reference::isa::IsaDesc;

/// Whether this CPU has the aarch64 target feature `feature` (one of the names in
/// [`isas()`]' feature lists), or `None` for a name this crate does not detect (every
/// name on other architectures).
pub fn feature_detected(feature: &str) -> Option<bool> {
    #[cfg(target_arch = "aarch64")]
    {
        isa::TABLE
            .iter()
            .any(|e| e.features.split(',').any(|f| f == feature))
            .then(|| isa::detected(feature))
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        let _ = feature;
        None
    }
}

/// The aarch64 half of the ISA table (one [`IsaDesc`] per aarch64 ISA, best first:
/// feature list, detection with its reason, peak probe). Empty on other architectures.
pub fn isas() -> &'static [IsaDesc] {
    #[cfg(target_arch = "aarch64")]
    {
        isa::TABLE
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        &[]
    }
}

/// Generates a kernel module's two entry points and its runtime check from one feature
/// list, so `#[target_feature]` and `is_aarch64_feature_detected!` can never disagree.
///
/// `entry_points!(NeonDot, ["neon", "dotprod"], body)` asserts at compile time that the
/// list is the `NeonDot` ISA table entry's (`isa.rs`), and expects
/// `body<E: Epilogue>(&GemmArgs<E::Out>, &E)` in scope, an `#[inline(always)] unsafe fn`.
#[cfg(target_arch = "aarch64")]
macro_rules! entry_points {
    ($isa:ident, [$($feature:tt),+], $body:ident) => {
        const _: () = assert!(
            $crate::isa::same_list(
                &[$($feature),+],
                $crate::isa::entry(qlinear_reference::contract::Isa::$isa).features
            ),
            "the entry points' features differ from the ISA table entry's"
        );

        /// Static (u8 output) entry point.
        ///
        /// # Safety
        /// The contract of [`qlinear_reference::contract::GemmU8Fn`] for this kernel's
        /// layout, and the CPU has every feature [`is_supported`] checks.
        $(#[target_feature(enable = $feature)])+
        pub unsafe fn gemm_u8(
            args: &qlinear_reference::contract::GemmArgs<u8>,
            epi: &qlinear_reference::contract::StaticEpilogue,
        ) {
            // SAFETY: forwarded from this function's contract; the features are enabled.
            unsafe { $body(args, epi) }
        }

        /// Dynamic (f32 output) entry point.
        ///
        /// # Safety
        /// As for [`gemm_u8`] ([`qlinear_reference::contract::GemmF32Fn`]).
        $(#[target_feature(enable = $feature)])+
        pub unsafe fn gemm_f32(
            args: &qlinear_reference::contract::GemmArgs<f32>,
            epi: &qlinear_reference::contract::DynamicEpilogue,
        ) {
            // SAFETY: forwarded from this function's contract; the features are enabled.
            unsafe { $body(args, epi) }
        }

        /// Whether this CPU has every feature the entry points are compiled for: the
        /// ISA table entry's detection (std caches it).
        pub fn is_supported() -> bool {
            ($crate::isa::entry(qlinear_reference::contract::Isa::$isa).detect)().is_ok()
        }
    };
}

#[cfg(target_arch = "aarch64")]
mod common;
#[cfg(target_arch = "aarch64")]
mod isa;
#[cfg(target_arch = "aarch64")]
mod peak;
#[cfg(all(test, target_arch = "aarch64"))]
mod testing;

#[cfg(target_arch = "aarch64")]
pub mod i8mm;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "aarch64")]
pub mod neondot;

/// The kernel registry: builds [`kernels`]'s table from the kernel modules named (in the
/// order given, which must be best first) and generates each kernel's test module,
/// `kernel_tests::<module>`. The modules themselves are the ordinary `pub mod` items
/// above, so that `cargo fmt` formats them.
macro_rules! kernel_registry {
    ($($module:ident),+ $(,)?) => {
        #[cfg(target_arch = "aarch64")]
        static KERNELS: &[KernelDesc] = &[$($module::DESC),+];
        #[cfg(not(target_arch = "aarch64"))]
        static KERNELS: &[KernelDesc] = &[];

        #[cfg(all(test, target_arch = "aarch64"))]
        mod kernel_tests {
            $(
                mod $module {
                    use crate::testing as t;
                    use proptest::prelude::*;
                    const D: &qlinear_reference::contract::KernelDesc = &crate::$module::DESC;

                    #[test]
                    fn descriptor() {
                        t::descriptor(D);
                    }
                    #[test]
                    fn edge_catalogue_static() {
                        t::edge_static(D);
                    }
                    #[test]
                    fn edge_catalogue_dynamic() {
                        t::edge_dynamic(D);
                    }
                    #[test]
                    fn extreme_long_k() {
                        t::extreme(D);
                    }
                    #[test]
                    fn edge_scales_and_signed_zeros() {
                        t::edge_scales(D);
                    }
                    #[test]
                    fn split_calls_and_strides() {
                        t::splits(D);
                    }
                    proptest! {
                        #[test]
                        fn random_cases(seed in any::<u64>(), m in 1usize..11, k in 1usize..300, n in 1usize..70) {
                            t::random(D, seed, m, k, n);
                        }
                    }
                }
            )+
        }
    };
}

kernel_registry!(i8mm, neondot, neon);

/// Every kernel of this crate, best first. Empty on other architectures.
pub fn kernels() -> &'static [KernelDesc] {
    KERNELS
}
