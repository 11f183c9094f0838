//! # qlinear-kernels-x86
//!
//! The x86-64 kernels of qlinear, one file per ISA, each a
//! [`KernelDesc`] implementing the contract of [`qlinear_reference::contract`]:
//!
//! | kernel | core instruction | exactness |
//! |---|---|---|
//! | `avx512vnni/gemm_8x32c4` | `vpdpbusd zmm` | exact (non-saturating form) |
//! | `avxvnni/gemm_6x16c4` | `vpdpbusd ymm` (VEX) | exact |
//! | `avx2/gemm_6x8c4` | `vpmovsxbw` + `vpmaddwd` + `vpaddd` | exact: no `vpmaddubsw` |
//!
//! All three share the packed layout family "panels of NR columns, k-groups of 4"
//! (see [`qlinear_reference::contract::PackedLayout`]) and the loop nest of
//! `blocking` (private module). The list is empty on other architectures.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use qlinear_reference::contract::KernelDesc;

#[cfg(target_arch = "x86_64")]
mod isa;

#[cfg(target_arch = "x86_64")]
pub(crate) mod blocking;

#[cfg(target_arch = "x86_64")]
mod epilogue256;

#[cfg(target_arch = "x86_64")]
mod pack;

#[cfg(all(test, target_arch = "x86_64"))]
mod testing;

/// The kernel registry: one line per kernel, best first. Generates the modules,
/// [`kernels()`] and one kernel-level test per kernel (the criterion benches and the
/// API's backend tests iterate [`kernels()`]).
macro_rules! kernel_registry {
    ($($(#[$meta:meta])* $module:ident),* $(,)?) => {
        $( $(#[$meta])* #[cfg(target_arch = "x86_64")] pub mod $module; )*

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
    avx512vnni,
    avxvnni,
    avx2,
}
