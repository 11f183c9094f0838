//! The `qlinear bench` peak probes of the aarch64 ISAs (their table entries' `peak`): the
//! core MAC instruction of each ISA's kernel, [`PEAK_ACCUMULATORS`] independent
//! accumulators per iteration, in `asm!` so the compiler cannot merge or hoist them.

use std::arch::asm;

use qlinear_reference::isa::PEAK_ACCUMULATORS;

const _: () = assert!(PEAK_ACCUMULATORS == 12);

/// Twelve accumulators v0..v11, operands v12, v13; `$n` iterations of twelve
/// instructions `$op vI, v12, v13` written by the caller.
macro_rules! asm_loop {
    ($iters:expr, $($body:literal),+ $(,)?) => {
        if $iters > 0 {
            asm!(
                "movi v12.16b, #3",
                "movi v13.16b, #5",
                "movi v0.16b, #0", "movi v1.16b, #0", "movi v2.16b, #0", "movi v3.16b, #0",
                "movi v4.16b, #0", "movi v5.16b, #0", "movi v6.16b, #0", "movi v7.16b, #0",
                "movi v8.16b, #0", "movi v9.16b, #0", "movi v10.16b, #0", "movi v11.16b, #0",
                "2:",
                $($body,)+
                "subs {n}, {n}, #1",
                "b.ne 2b",
                n = inout(reg) $iters => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _,
                out("v5") _, out("v6") _, out("v7") _, out("v8") _, out("v9") _,
                out("v10") _, out("v11") _, out("v12") _, out("v13") _,
                options(nostack, nomem),
            )
        }
    };
}

/// `sdot`: 16 MACs per instruction. Returns the MACs done.
///
/// # Safety
/// The neondot table entry's detection succeeded.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn sdot(iters: u64) -> f64 {
    // SAFETY: registers only (declared clobbered), no memory; dotprod is enabled.
    unsafe {
        asm_loop!(
            iters,
            "sdot v0.4s, v12.16b, v13.16b",
            "sdot v1.4s, v12.16b, v13.16b",
            "sdot v2.4s, v12.16b, v13.16b",
            "sdot v3.4s, v12.16b, v13.16b",
            "sdot v4.4s, v12.16b, v13.16b",
            "sdot v5.4s, v12.16b, v13.16b",
            "sdot v6.4s, v12.16b, v13.16b",
            "sdot v7.4s, v12.16b, v13.16b",
            "sdot v8.4s, v12.16b, v13.16b",
            "sdot v9.4s, v12.16b, v13.16b",
            "sdot v10.4s, v12.16b, v13.16b",
            "sdot v11.4s, v12.16b, v13.16b",
        )
    }
    (iters * PEAK_ACCUMULATORS * 16) as f64
}

/// `usmmla`: 32 MACs per instruction. Returns the MACs done.
///
/// # Safety
/// The i8mm table entry's detection succeeded.
#[target_feature(enable = "neon,i8mm")]
pub(crate) unsafe fn usmmla(iters: u64) -> f64 {
    // SAFETY: registers only (declared clobbered), no memory; i8mm is enabled.
    unsafe {
        asm_loop!(
            iters,
            "usmmla v0.4s, v12.16b, v13.16b",
            "usmmla v1.4s, v12.16b, v13.16b",
            "usmmla v2.4s, v12.16b, v13.16b",
            "usmmla v3.4s, v12.16b, v13.16b",
            "usmmla v4.4s, v12.16b, v13.16b",
            "usmmla v5.4s, v12.16b, v13.16b",
            "usmmla v6.4s, v12.16b, v13.16b",
            "usmmla v7.4s, v12.16b, v13.16b",
            "usmmla v8.4s, v12.16b, v13.16b",
            "usmmla v9.4s, v12.16b, v13.16b",
            "usmmla v10.4s, v12.16b, v13.16b",
            "usmmla v11.4s, v12.16b, v13.16b",
        )
    }
    (iters * PEAK_ACCUMULATORS * 32) as f64
}

/// `smlal` / `smlal2` by vector: 8 MACs per instruction. Returns the MACs done.
///
/// # Safety
/// The neon table entry's detection succeeded.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn smlal(iters: u64) -> f64 {
    // SAFETY: registers only (declared clobbered), no memory; NEON is enabled.
    unsafe {
        asm_loop!(
            iters,
            "smlal v0.8h, v12.8b, v13.8b",
            "smlal2 v1.8h, v12.16b, v13.16b",
            "smlal v2.8h, v12.8b, v13.8b",
            "smlal2 v3.8h, v12.16b, v13.16b",
            "smlal v4.8h, v12.8b, v13.8b",
            "smlal2 v5.8h, v12.16b, v13.16b",
            "smlal v6.8h, v12.8b, v13.8b",
            "smlal2 v7.8h, v12.16b, v13.16b",
            "smlal v8.8h, v12.8b, v13.8b",
            "smlal2 v9.8h, v12.16b, v13.16b",
            "smlal v10.8h, v12.8b, v13.8b",
            "smlal2 v11.8h, v12.16b, v13.16b",
        )
    }
    (iters * PEAK_ACCUMULATORS * 8) as f64
}
