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

/// The parts every x86 kernel file has in common: its [`KernelDesc`] static, the runtime
/// check, and the dynamic-input helpers (the portable loops of
/// `qlinear_reference::activation` instantiated under the ISA's target features, so they
/// vectorize for it). The file provides `gemm_u8` and `gemm_f32`.
///
/// [`KernelDesc`]: qlinear_reference::contract::KernelDesc
macro_rules! kernel_descriptor {
    ($isa:ident { name: $name:literal, backend: $backend:literal, mr: $mr:expr, nr: $nr:expr, kr: $kr:expr $(,)? }) => {
        /// The kernel descriptor.
        pub static KERNEL: qlinear_reference::contract::KernelDesc =
            qlinear_reference::contract::KernelDesc {
                name: $name,
                backend: $backend,
                mr: $mr,
                layout: qlinear_reference::contract::PackedLayout { nr: $nr, kr: $kr },
                is_supported,
                gemm_u8,
                gemm_f32,
                min_max,
                quantize,
                pack_panel: Some(pack_panel),
            };

        fn is_supported() -> bool {
            $isa!(detect! {})
        }

        $isa!(target_fn! {
            /// The dynamic input's range check, vectorized for this ISA.
            ///
            /// # Safety
            /// The CPU supports this kernel's ISA.
            unsafe fn min_max(
                x: &qlinear_reference::MatRef<'_, f32>,
            ) -> qlinear_reference::Result<(f32, f32)> {
                qlinear_reference::activation::min_max_finite(x)
            }
        });

        $isa!(target_fn! {
            /// Packs one panel and sums its columns with AVX2 (see `crate::pack`).
            ///
            /// # Safety
            /// As [`qlinear_reference::contract::PackPanelFn`] states.
            unsafe fn pack_panel(
                w: &[i8],
                n: usize,
                k: usize,
                p: usize,
                out: &mut [u8],
                col_sums: &mut [i32],
            ) {
                // SAFETY: forwarded contract; this ISA includes AVX2.
                unsafe { crate::pack::pack_panel_c4::<{ $nr }>(w, n, k, p, out, col_sums) }
            }
        });

        $isa!(target_fn! {
            /// The dynamic input's quantization (and row sums), vectorized for this ISA.
            ///
            /// # Safety
            /// The CPU supports this kernel's ISA.
            unsafe fn quantize(
                x: &qlinear_reference::MatRef<'_, f32>,
                scale: f32,
                zp: i32,
                out: &mut [u8],
            ) -> Vec<i32> {
                qlinear_reference::activation::quantize_rows(x, scale, zp, out)
            }
        });
    };
}

pub(crate) use {avx2_isa, avx512vnni_isa, avxvnni_isa, detect, kernel_descriptor, target_fn};
