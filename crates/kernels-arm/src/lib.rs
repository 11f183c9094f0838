//! aarch64 kernels (filled in by the ARM kernel work).
#![cfg_attr(not(target_arch = "aarch64"), allow(unused))]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use qlinear_reference::contract::KernelDesc;

/// Every kernel of this crate, best first. Empty on other architectures.
pub fn kernels() -> &'static [KernelDesc] {
    &[]
}
