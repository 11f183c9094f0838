//! # qlinear-kernels-x86
//!
//! The x86-64 kernels of qlinear, one file per ISA, each a
//! [`KernelDesc`] implementing the contract of [`qlinear_reference::contract`]:
//!
//! | kernel | core instruction | exactness |
//! |---|---|---|
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
//! `#[target_feature(enable = "...")]` with that ISA's feature list, which `isa` (private
//! module) defines once per ISA and detects at runtime; its unit tests check that every
//! such attribute in the kernel files equals its ISA's list. A file's `kernel_descriptor!`
//! call generates its [`KernelDesc`] static, its runtime check and the dynamic-input
//! helpers, and asserts at compile time that the attribute it is given equals the list it
//! detects.
//!
//! Adding a kernel: a new file (its entry points `gemm_u8` / `gemm_f32` and a
//! `kernel_descriptor!` call; a new ISA also gets its list in `isa`, and a new feature
//! name its line in `isa`'s detection `match`), its `pub mod` line
//! below, one name in the `kernel_registry!` call (which builds [`kernels()`] and the
//! kernel test `registry_tests::<name>`), and its file in `isa`'s attribute test.
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
    avx512vnni_gemv,
    avxvnni,
    avx2,
}
