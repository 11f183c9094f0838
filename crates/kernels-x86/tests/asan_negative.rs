//! The AddressSanitizer stage's negative check (issue 12): proof that the sanitizer build
//! of `.ci/asan.sh` can see a kernel read one byte out of bounds.
//!
//! The one test here hands the AVX2 kernel's static entry point an activation buffer
//! one byte short (dense rows, the last row missing its last byte) and so makes the
//! kernel read one byte past the end of a heap allocation. That read is undefined
//! behaviour, so the test
//!
//! * is `#[ignore]`d: a normal `cargo test` never runs it;
//! * does nothing (and says so) unless `QLINEAR_ASAN_NEGATIVE=1` is set, so even
//!   `cargo test -- --ignored` does not run it by accident;
//! * is run by `.ci/asan.sh` only, in the `-Zsanitizer=address` build, with
//!   `-- --ignored --exact avx2_one_byte_short_activations_is_reported`, and that
//!   script requires it to FAIL with `AddressSanitizer: heap-buffer-overflow` on
//!   stderr. If the call returns, the test panics: no sanitizer saw the read.
//!
//! Before the faulty call the test runs the same inputs in a buffer of the right size
//! and checks the output against the reference, so the only defect of the second call
//! is the missing byte.
#![cfg(target_arch = "x86_64")]
// Test code: telling the person running it why it skipped, or what it did, is the point.
#![allow(clippy::print_stderr)]

use qlinear_kernels_x86::avx2;
use qlinear_reference::contract::{GemmArgs, StaticEpilogue};
use qlinear_reference::testkit::{Rng, StaticCase};
use qlinear_reference::{pack, MatRef};

/// The environment variable that arms the test (value `1`).
const ARM_ENV: &str = "QLINEAR_ASAN_NEGATIVE";

/// `m` rows: more than one register tile (MR = 6) so a partial tile holds the last row.
const M: usize = 7;
/// `k` is not a multiple of the k-group (4) nor of a vector width, so the last byte is
/// read by the remainder of the widening loop; the kernel reads every row's `k` bytes.
const K: usize = 37;
/// Two panels of 8 columns, the second partial.
const N: usize = 11;

/// Runs the AVX2 static entry point on `a` (dense rows of `K` bytes; the caller decides
/// whether `a` really holds `M * K` of them) and returns the `M x N` output.
fn run_avx2(c: &StaticCase, a: *const u8) -> Vec<u8> {
    let desc = &avx2::KERNEL;
    let layout = desc.layout;
    let packed = pack::pack(&c.w, N, K, layout);
    let col_sums = pack::column_sums(&c.w, N, K);
    let n_pad = layout.n_padded(N);
    let dense = dense_rows(c);
    let row_sums: Vec<i32> = dense.chunks_exact(K).map(pack::row_sum).collect();
    let epi = StaticEpilogue::new(
        c.profile,
        c.x,
        &c.wq,
        &col_sums,
        K,
        c.bias.as_deref(),
        c.y,
        c.relu,
        n_pad,
    );
    let mut out = vec![0u8; M * N];
    let args = GemmArgs {
        a,
        a_stride: K,
        m: M,
        k: K,
        packed: packed.as_ptr(),
        n_begin: 0,
        n_end: N,
        row_sums: if c.wq.all_zero_points_zero() {
            std::ptr::null()
        } else {
            row_sums.as_ptr()
        },
        row_qparams: std::ptr::null(),
        out: out.as_mut_ptr(),
        out_stride: N,
    };
    // SAFETY: the caller checked that the CPU has AVX2 and FMA; `packed` is the
    // reference packing of all N columns in the kernel's layout, the epilogue is padded
    // to whole panels, `row_sums` holds M sums, `out` is M x N and the column range starts
    // at 0. `a` holds M rows of K bytes for the control call; for the negative call it is
    // one byte short ON PURPOSE, which is the out-of-bounds read AddressSanitizer must
    // report (the test only runs, explicitly armed, in the sanitizer build).
    unsafe { (desc.gemm_u8)(&args, &epi) };
    out
}

/// The case's activations as dense rows of `K` bytes (the test kit may pick a stride).
fn dense_rows(c: &StaticCase) -> Vec<u8> {
    let a = MatRef::new(&c.a, M, K, c.a_stride).unwrap();
    (0..M).flat_map(|i| a.row(i).iter().copied()).collect()
}

#[test]
#[ignore = "reads one byte past a heap buffer on purpose (UB without a sanitizer); run by \
            .ci/asan.sh under -Zsanitizer=address with QLINEAR_ASAN_NEGATIVE=1"]
fn avx2_one_byte_short_activations_is_reported() {
    if std::env::var_os(ARM_ENV).is_none_or(|v| v != "1") {
        eprintln!(
            "asan_negative: not armed ({ARM_ENV}=1 is not set): this test reads out of \
             bounds on purpose and only makes sense in the AddressSanitizer build of \
             .ci/asan.sh; nothing was run"
        );
        return;
    }
    assert!(
        (avx2::KERNEL.is_supported)(),
        "asan_negative: this CPU lacks AVX2/FMA, so the AVX2 kernel cannot be called and \
         the sanitizer's out-of-bounds detection cannot be checked here"
    );

    let c = StaticCase::random(&mut Rng::new(0x0a5a_0012), M, K, N);
    let dense = dense_rows(&c);

    // Control: the same inputs in a buffer of the right size give the reference output.
    let want = qlinear_reference::static_linear(
        &MatRef::new(&dense, M, K, K).unwrap(),
        c.x,
        &c.w,
        N,
        &c.wq,
        c.bias.as_deref(),
        c.y,
        c.relu,
        c.profile,
    )
    .unwrap();
    assert_eq!(
        run_avx2(&c, dense.as_ptr()),
        want,
        "control call (full buffer)"
    );

    // The faulty call: a heap allocation of exactly M * K - 1 bytes.
    let len = M * K - 1;
    let mut short: Vec<u8> = Vec::with_capacity(len);
    short.extend_from_slice(&dense[..len]);
    assert_eq!(
        short.capacity(),
        len,
        "the allocation must end at the missing byte"
    );
    eprintln!(
        "asan_negative: calling {} with {len} activation bytes for {M} x {K}; \
         AddressSanitizer must report a heap-buffer-overflow now",
        avx2::KERNEL.name
    );
    let _ = run_avx2(&c, short.as_ptr());
    panic!(
        "asan_negative: the kernel read one byte past a {len}-byte heap buffer and nothing \
         reported it: this binary is not built with -Zsanitizer=address, or the sanitizer \
         cannot see the kernel's reads"
    );
}
