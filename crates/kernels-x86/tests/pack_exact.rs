//! The x86 kernels' vector packers (`KernelDesc::pack_panel`) against the portable
//! packer, the oracle: every panel's bytes and every column sum, bit for bit, on edge
//! shapes (N around the panel widths 8/16/32, K around the k-group of 4, the 8-group
//! vector step and the packer's 64-group K block) and on random, all -128, all 127 and
//! alternating extreme weights.
//!
//! Each kernel runs when the CPU supports it; a kernel listed in `QLINEAR_REQUIRE`
//! (comma-separated backend names, or `all`) that the CPU lacks fails the test instead
//! of skipping, so CI cannot silently test nothing. The output buffers start filled with
//! a marker byte so an unwritten byte shows up, and one buffer is reused across panels
//! as the API does.
#![cfg(target_arch = "x86_64")]
// Test code: telling the person running the tests about a skipped kernel is the point.
#![allow(clippy::print_stderr)]

use qlinear_reference::contract::{Isa, KernelDesc};
use qlinear_reference::pack;
use qlinear_reference::testkit::Rng;

/// True when `QLINEAR_REQUIRE` lists `backend` (or `all`).
fn required(backend: &str) -> bool {
    std::env::var("QLINEAR_REQUIRE").is_ok_and(|v| {
        v.split(',')
            .any(|s| s.trim() == "all" || s.trim() == backend)
    })
}

/// The ISA's kernels (several may share its packing, e.g. a GEMM and a GEMV kernel,
/// each with its own packer entry), if this CPU runs them; panics if the ISA is
/// required but unsupported.
fn kernels(isa: Isa) -> Vec<&'static KernelDesc> {
    let descs: Vec<&'static KernelDesc> = qlinear_kernels_x86::kernels()
        .iter()
        .filter(|d| d.isa == isa)
        .collect();
    assert!(!descs.is_empty(), "no x86 kernel for {isa}");
    if descs.iter().all(|d| (d.is_supported)()) {
        return descs;
    }
    assert!(
        !required(isa.name()),
        "QLINEAR_REQUIRE lists {isa}, which this CPU lacks"
    );
    for d in descs {
        eprintln!("SKIP {}: not supported on this CPU", d.name);
    }
    Vec::new()
}

/// Output channels: around the panel widths of all three kernels.
#[cfg(not(miri))]
const NS: [usize; 8] = [1, 15, 16, 17, 31, 32, 33, 100];
/// Input channels: around the k-group (4), one and several 8-group vector steps (32
/// bytes), the 64-group K block (256 bytes), and a long row with a tail.
#[cfg(not(miri))]
const KS: [usize; 14] = [1, 3, 4, 5, 31, 32, 36, 63, 64, 65, 256, 257, 292, 1000];

/// Under Miri (every operation interpreted) a few shapes that still reach the vector
/// path (K >= 32) and its tail, a partial panel, and two panels.
#[cfg(miri)]
const NS: [usize; 3] = [1, 17, 33];
#[cfg(miri)]
const KS: [usize; 4] = [3, 4, 33, 36];

/// The weights of one shape: random, all -128, all 127, and -128/127 alternating by
/// column and position (so column sums reach both extremes of their range).
fn weights(rng: &mut Rng, n: usize, k: usize) -> Vec<(&'static str, Vec<i8>)> {
    vec![
        ("random", rng.i8s(n * k)),
        ("all -128", vec![i8::MIN; n * k]),
        ("all 127", vec![i8::MAX; n * k]),
        (
            "alternating",
            (0..n * k)
                .map(|i| {
                    if (i / k + i % k).is_multiple_of(3) {
                        i8::MIN
                    } else {
                        i8::MAX
                    }
                })
                .collect(),
        ),
    ]
}

/// Packs every panel of every weight of every shape with `desc`'s packer and the
/// portable one and compares bytes and column sums.
fn check(isa: Isa) {
    for desc in kernels(isa) {
        check_kernel(desc);
    }
}

fn check_kernel(desc: &KernelDesc) {
    let fast = desc
        .pack_panel
        .unwrap_or_else(|| panic!("{} has no vector packer", desc.name));
    let layout = desc.layout;
    let nr = layout.nr;
    let mut rng = Rng::new(0x9ac4 ^ nr as u64);
    let mut panels = 0usize;
    for n in NS {
        for k in KS {
            for (what, w) in weights(&mut rng, n, k) {
                let mut want_sums = pack::column_sums(&w, n, k);
                want_sums.resize(layout.n_padded(n), 0);
                let want = pack::pack(&w, n, k, layout);
                // One output buffer for all panels (as the API reuses one), so stale
                // bytes of the previous panel would show as well as the marker.
                let mut got = vec![0x5Au8; layout.panel_bytes(k)];
                for p in 0..layout.n_padded(n) / nr {
                    let mut sums = vec![0x5A5A_5A5Ai32; nr];
                    // SAFETY: the CPU supports the kernel (`kernel` checked); `w` holds
                    // n * k values, `got` one panel of the layout, `sums` nr values, and
                    // p < n_pad / nr.
                    unsafe { fast(&w, n, k, p, &mut got, &mut sums) };
                    let span = p * got.len()..(p + 1) * got.len();
                    assert!(
                        got == want[span],
                        "{} packer, {what} weight n={n} k={k}: panel {p} differs from \
                         the reference packer",
                        desc.name
                    );
                    assert_eq!(
                        sums,
                        want_sums[p * nr..(p + 1) * nr],
                        "{} column sums, {what} weight n={n} k={k}: panel {p}",
                        desc.name
                    );
                    panels += 1;
                }
            }
        }
    }
    assert!(panels > 0);
}

// One test per kernel, by name (`.ci/miri.sh` runs the avx2 and avxvnni ones). Every
// kernel's packer is also checked by its generated `registry_tests::<kernel>` test, so a
// new ISA needs no line here.

#[test]
fn avx512vnni_packer_matches_reference() {
    check(Isa::Avx512Vnni);
}

#[test]
fn avxvnni_packer_matches_reference() {
    check(Isa::AvxVnni);
}

#[test]
fn avx2_packer_matches_reference() {
    check(Isa::Avx2);
}
