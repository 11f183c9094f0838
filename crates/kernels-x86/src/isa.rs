//! Feature lists, written once per ISA and used for both `#[target_feature]` and the
//! runtime check.
//!
//! Each ISA is a macro that hands its feature list to a callback macro:
//! [`target_fn!`] stamps one `#[target_feature(enable = ..)]` per feature on a kernel
//! entry point, [`detect!`] turns the same list into `is_x86_feature_detected!` calls.

/// Applies `#[target_feature(enable = "f")]` for each listed feature to an `unsafe fn`.
macro_rules! target_fn {
    ([$($feat:tt),*] $(#[$meta:meta])* $vis:vis unsafe fn $($rest:tt)*) => {
        $(#[$meta])* $(#[target_feature(enable = $feat)])* $vis unsafe fn $($rest)*
    };
}

/// True when every listed feature is detected at runtime.
macro_rules! detect {
    ([$($feat:tt),*]) => {
        true $(&& std::arch::is_x86_feature_detected!($feat))*
    };
}

/// AVX-512 VNNI kernels: 512-bit `vpdpbusd`, byte/word masks (BW, VL) for tails.
macro_rules! avx512vnni_isa {
    ($cb:ident ! { $($rest:tt)* }) => {
        $cb! { ["avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx2", "fma"] $($rest)* }
    };
}

/// AVX-VNNI kernels: VEX-encoded 256-bit `vpdpbusd` on CPUs without AVX-512.
macro_rules! avxvnni_isa {
    ($cb:ident ! { $($rest:tt)* }) => {
        $cb! { ["avx2", "fma", "avxvnni"] $($rest)* }
    };
}

/// The exact AVX2 kernel: widening + `vpmaddwd`, no saturating instruction.
macro_rules! avx2_isa {
    ($cb:ident ! { $($rest:tt)* }) => {
        $cb! { ["avx2", "fma"] $($rest)* }
    };
}

pub(crate) use {avx2_isa, avx512vnni_isa, avxvnni_isa, detect, target_fn};
