//! # `avx512vnni/gemv_1x32c4`: AVX-512 VNNI, one row at a time
//!
//! The M = 1 (GEMV) kernel of the AVX-512 VNNI backend, on the packed layout of
//! `avx512vnni/gemm_8x32c4` (`nr = 32`, `kr = 4`): a layer packed once for that layout
//! calls this kernel for one-row calls and the 8-row GEMM kernel for the rest (its
//! `m_pref` is `1..=1`; see "Several kernels per packed layout" in
//! [`qlinear_reference::contract`]).
//!
//! Each row keeps four k-groups in flight on eight zmm accumulators, summed at the end,
//! so a single row is bound by the weight stream rather than by the `vpdpbusd`
//! dependency chain. The code is the GEMM kernel's one-row tile (shared, in
//! [`crate::avx512vnni`]); this kernel runs it on every row, so it is correct (bit for
//! bit, like every kernel) for any M, just slower than the GEMM kernel once rows can
//! share weight loads. Reads and writes are those of the GEMM kernel.

use qlinear_reference::contract::MPreference;

use crate::avx512vnni::{gemv_f32 as gemm_f32, gemv_u8 as gemm_u8, KR, NR};
use crate::isa::kernel_descriptor;

/// Rows of the register tile.
pub const MR: usize = 1;

kernel_descriptor! {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    features: crate::isa::AVX512VNNI,
    name: "avx512vnni/gemv_1x32c4",
    isa: Avx512Vnni,
    mr: MR,
    nr: NR,
    kr: KR,
    m_pref: MPreference {
        m_min: 1,
        m_max: 1,
        rank: 0,
    },
}
