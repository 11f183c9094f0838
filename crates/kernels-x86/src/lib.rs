//! x86-64 kernels (filled in by the x86 kernel work).
#![cfg_attr(not(target_arch = "x86_64"), allow(unused))]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use qlinear_reference::contract::KernelDesc;

/// Every kernel of this crate, best first. Empty on other architectures.
pub fn kernels() -> &'static [KernelDesc] {
    &[]
}
