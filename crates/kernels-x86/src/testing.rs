//! Kernel-level tests, generated for every kernel of the registry (and called by `amx`'s
//! tile-edge tests): the shared harness of [`qlinear_reference::testkit::kernel`] calls
//! the kernel's entry points directly through its [`KernelDesc`] (no API, no driver), for
//! the edge catalogue of its tile sizes, in canaried strided outputs with guards, whole
//! and split into row pieces and column ranges, and compares them bit for bit with the
//! literal oracle. (The API-level suite in `qlinear/tests` covers threading, views and
//! the conformance file on top of this.)

use qlinear_reference::contract::KernelDesc;
use qlinear_reference::testkit::kernel;
use qlinear_reference::testkit::Rng;

/// One shape on `desc` (whose ISA the caller checked): see [`kernel::check_shape`].
pub(crate) fn check_shape(desc: &KernelDesc, rng: &mut Rng, m: usize, k: usize, n: usize) {
    kernel::check_shape(desc, rng, m, k, n);
}

/// The edge catalogue of `desc`'s tile and the edge-scale sweep: see
/// [`kernel::check_kernel`]. Skips (printing `SKIP ...`) when the CPU lacks the ISA,
/// unless `QLINEAR_REQUIRE` lists the kernel's backend.
pub(crate) fn check_kernel(desc: &KernelDesc) {
    kernel::check_kernel(desc);
}
