//! Which backend `Backend::Auto` picks on this CPU.
//!
//! `.ci/arm.sh` runs this file under several qemu CPU models with `QLINEAR_EXPECT_AUTO`
//! set to the backend that model must select (`cortex-a53` -> `neon`, `cortex-a76` ->
//! `neondot`, `max` -> `i8mm`). Without the variable only the consistency checks run.
//! Environment variables are process-global: this file holds one test (its own process).
//! The test exists only on aarch64: elsewhere the kernel list is empty and it would
//! check nothing while counting as a pass.
#![cfg(target_arch = "aarch64")]
#![allow(clippy::print_stderr)]

use qlinear::unstable::resolve;
use qlinear::{Backend, BACKEND_ENV};

#[test]
fn auto_picks_the_expected_backend() {
    // Auto must not be steered by an override here.
    std::env::remove_var(BACKEND_ENV);
    let auto = resolve(Backend::Auto).expect("Auto always resolves");

    // Every kernel of this crate is forcible exactly when the CPU supports it, and a
    // forced backend the CPU lacks is an error, never a crash.
    for k in qlinear_kernels_arm::kernels() {
        let b = Backend::from_isa(k.isa);
        assert_eq!(
            resolve(b).is_ok(),
            (k.is_supported)(),
            "{}: forcing must succeed iff supported",
            k.name
        );
    }
    // The registry is best first, so on aarch64 Auto is its first supported kernel.
    if cfg!(target_arch = "aarch64") {
        let first = qlinear_kernels_arm::kernels()
            .iter()
            .find(|k| (k.is_supported)())
            .map(|k| k.name);
        assert_eq!(
            first,
            Some(auto.kernel_name()),
            "Auto is the best supported kernel"
        );
    }

    match std::env::var("QLINEAR_EXPECT_AUTO") {
        Ok(expect) => assert_eq!(
            auto.backend().name(),
            expect.trim(),
            "Backend::Auto resolved to {} ({})",
            auto.backend(),
            auto.kernel_name()
        ),
        Err(_) => eprintln!(
            "QLINEAR_EXPECT_AUTO unset; Auto resolved to {} ({})",
            auto.backend(),
            auto.kernel_name()
        ),
    }
}
