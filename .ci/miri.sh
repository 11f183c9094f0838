#!/usr/bin/env bash
# Miri stage (issue 12): `bash .ci/miri.sh`.
#
#   1. installs what it needs if missing: the nightly toolchain (minimal profile), its
#      miri and rust-src components, and Miri's sysroot (`cargo +nightly miri setup`);
#   2. reference: the oracle's property tests (crates/reference/tests/properties.rs),
#      MIRI_PROPTEST_CASES proptest cases each;
#   3. api: the API's error tests (errors.rs), the review regressions (review_defects.rs)
#      and the api.rs tests of API_SUBSET below, built without target features: under
#      Miri `is_x86_feature_detected!` then says no, only the reference backend exists
#      and these run on the reference engine;
#   4. kernels: the kernel-level tests of the AVX2 and AVX-VNNI kernels
#      (`registry_tests::avx2` / `::avxvnni`: the shared harness of
#      crates/reference/src/testkit/kernel.rs, small shapes under cfg(miri)), built with -Ctarget-feature=+avx2,+fma,+avxvnni so that
#      detection says yes, and QLINEAR_REQUIRE=avx2,avxvnni so that a kernel that skips
#      FAILS. About the AVX-VNNI kernel: Miri implements `vpdpbusd ymm`
#      (llvm.x86.avx512.vpdpbusd.256, which both the AVX-VNNI `_mm256_dpbusd_avx_epi32`
#      and the AVX512-VNNI+VL `_mm256_dpbusd_epi32` call; same operation) but refuses it
#      unless avx512vnni and avx512vl are enabled. The stage runs the kernel with its own
#      features first; if Miri stops it with exactly that complaint, it prints Miri's
#      message and runs it again with +avx512vnni,+avx512vl added to the build. The code
#      under test is the same AVX-VNNI kernel (the avx512vnni kernel stays undetected:
#      avx512bw is off). Any other outcome fails the stage;
#   5. kernels-sb: the same two kernel tests under Stacked Borrows, Miri's default (and in
#      places stricter) aliasing model; they use no rayon, so they can;
#   6. api-kernels: errors.rs and review_defects.rs again, built with the kernel stage's
#      features, so every test runs on the avx2 and avxvnni engines as well: the API's
#      checks in front of the unsafe kernel calls, the packers, the driver's pieces and a
#      rayon helper thread (the reference engine of stage 3 bypasses all of them). The
#      API detects kernels with the same `is_supported` functions that stage 4 required;
#   7. AVX-512: Miri cannot run the AVX-512 kernels. The stage prints so, and why: it runs
#      the avx512vnni kernel test with the AVX-512 features and prints the intrinsic Miri
#      does not implement (it fails if that run ends any other way than "unsupported
#      operation"; if Miri ever runs it to the end, it counts and says so);
#   8. a summary: the tests Miri ran and passed per stage (`test result:` lines).
#
# Under Miri every operation is interpreted and checked, thousands of times slower than
# native code: the test files shrink their shapes and sweeps under cfg(miri) (see the
# comments there). About 6 minutes on the project's 2-core VM, builds included (plus
# ~20 s the first time for Miri's sysroot).
#
# Miri flags:
# * -Zmiri-tree-borrows (all but stage 5): crossbeam-epoch, under rayon, trips Stacked
#   Borrows. (Miri also warns about crossbeam-epoch's integer-to-pointer casts.)
# * -Zmiri-ignore-leaks: rayon's pool threads are still alive when a test binary exits.
# * Isolation stays ON (no -Zmiri-disable-isolation): the tests see no host environment
#   but the variables forwarded below, and Miri's RNG (seeded by MIRI_SEED) is their only
#   randomness, so proptest draws the same cases on every run with the same seed. The
#   one host access is proptest's failure-persistence lookup (`getcwd`):
#   -Zmiri-isolation-error=warn-nobacktrace makes it return an error (proptest then runs
#   without a persistence file) and Miri prints one warning per test binary.
# * -Zmiri-env-forward=PROPTEST_CASES,QLINEAR_REQUIRE: the variables the tests read
#   (without the second, a kernel the build does not enable would skip and pass).
#
# Environment: MIRI_PROPTEST_CASES (default 3; the caller's PROPTEST_CASES is ignored, it
# is sized for native runs), MIRI_SEED (default 0), MIRIFLAGS (appended, e.g.
# -Zmiri-backtrace=full). CARGO_TARGET_DIR is honoured as cargo does (cargo miri builds
# in <target dir>/miri); logs go to <target dir>/miri-logs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0
# Miri ignores the test profile's opt-level = 2 and warns about it once per binary.
export CARGO_PROFILE_TEST_OPT_LEVEL=0
# Target features are chosen per stage below, and nothing else.
unset CARGO_ENCODED_RUSTFLAGS RUSTFLAGS QLINEAR_REQUIRE

export PROPTEST_CASES=${MIRI_PROPTEST_CASES:-3}
extra_miriflags=${MIRIFLAGS:-}
base_miriflags=(
    -Zmiri-ignore-leaks
    -Zmiri-isolation-error=warn-nobacktrace
    -Zmiri-env-forward=PROPTEST_CASES
    -Zmiri-env-forward=QLINEAR_REQUIRE
    "-Zmiri-seed=${MIRI_SEED:-0}"
)

KERNEL_FEATURES="+avx2,+fma,+avxvnni"
# What Miri's implementation of llvm.x86.avx512.vpdpbusd.256 also demands.
VNNI_SHIM_FEATURES="+avx512vnni,+avx512vl"
AVX512_FEATURES="+avx2,+fma,+avx512f,+avx512bw,+avx512vl,+avx512vnni"

# The api.rs tests small enough for Miri as they are (the others run the eight SHAPES,
# a proptest, or the conformance file, which needs host file access).
API_SUBSET=(
    conformance_mini_file_parses_and_runs
    conformance_parse_huge_sizes_do_not_panic
    conformance_parse_rejects_malformed_files
    conformance_parse_rejects_signed_hex
    conformance_static_case_without_input_qparams_is_not_a_pass
    dynamic_absurd_weight_scale_matches_oracle
    layers_are_send_and_sync
    m_zero_works_and_writes_nothing
)

logdir=${CARGO_TARGET_DIR:-$root/target}/miri-logs
rm -rf "$logdir"
mkdir -p "$logdir"

start=$(date +%s)
step() { printf '\n=== miri: %s (+%ss) ===\n' "$*" "$(( $(date +%s) - start ))"; }

declare -A passed=() failed=() ignored=() names=()
stages=()
failures=()
nlog=0
last_log=

# miri_test STAGE MODEL FEATURES cargo-miri-test-args...
# Runs `cargo +nightly miri test ARGS` under aliasing MODEL (tree|stacked), with
# RUSTFLAGS=-Ctarget-feature=FEATURES (no flags if empty), its output teed to a log
# ($last_log; only logged if QUIET is set), and adds the counts of its `test result:`
# lines and the names of its passing tests to STAGE. Returns cargo's exit status.
miri_test() {
    local stage=$1 model=$2 features=$3
    shift 3
    local rustflags= flags=("${base_miriflags[@]}") miriflags
    [ -z "$features" ] || rustflags="-Ctarget-feature=$features"
    [ "$model" = stacked ] || flags=(-Zmiri-tree-borrows "${flags[@]}")
    miriflags="${flags[*]}${extra_miriflags:+ $extra_miriflags}"
    nlog=$((nlog + 1))
    last_log=$logdir/$nlog-$stage.log
    [[ " ${stages[*]} " == *" $stage "* ]] || stages+=("$stage")
    echo "+ MIRIFLAGS=\"$miriflags\" RUSTFLAGS=\"$rustflags\"" \
        "QLINEAR_REQUIRE=${QLINEAR_REQUIRE:-} cargo +nightly miri test $*"
    local status=0
    if [ -n "${QUIET:-}" ]; then
        MIRIFLAGS=$miriflags RUSTFLAGS=$rustflags cargo +nightly miri test "$@" \
            >"$last_log" 2>&1 || status=$?
    else
        MIRIFLAGS=$miriflags RUSTFLAGS=$rustflags cargo +nightly miri test "$@" 2>&1 |
            tee "$last_log" || status=$?
    fi
    passed[$stage]=$(( ${passed[$stage]:-0} + $(count passed) ))
    failed[$stage]=$(( ${failed[$stage]:-0} + $(count failed) ))
    ignored[$stage]=$(( ${ignored[$stage]:-0} + $(count ignored) ))
    names[$stage]+=$(sed -nE 's/^test (.*) \.\.\. ok$/ \1/p' "$last_log" | tr -d '\n')
    return "$status"
}

# count WHAT: the sum of the "N WHAT" fields of the `test result:` lines of $last_log.
count() {
    sed -nE "s/^test result: .* ([0-9]+) $1;.*/\1/p" "$last_log" |
        awk '{ s += $1 } END { print s + 0 }'
}

# expect_passed WHAT N: the last run must have passed exactly N tests (a renamed test
# would otherwise silently drop out of an --exact list).
expect_passed() {
    local got
    got=$(count passed)
    if [ "$got" -ne "$2" ]; then
        fail "$1: expected $2 tests to pass, $got did (renamed test?)"
    fi
}

fail() {
    echo "miri: FAILED: $*" >&2
    failures+=("$*")
}

step "toolchain"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
rustup component add miri rust-src --toolchain nightly
rustup run nightly rustc --version
cargo +nightly miri --version
cargo +nightly miri setup
echo "PROPTEST_CASES=$PROPTEST_CASES"

step "reference: property tests (crates/reference/tests/properties.rs)"
miri_test reference tree "" -p qlinear-reference --test properties ||
    fail "reference property tests"

step "api: errors.rs, review_defects.rs (reference backend)"
miri_test api tree "" -p qlinear --no-fail-fast --test errors --test review_defects ||
    fail "api: errors.rs / review_defects.rs"

step "api: api.rs subset (reference backend)"
if miri_test api tree "" -p qlinear --test api -- --exact "${API_SUBSET[@]}"; then
    expect_passed "api.rs subset" "${#API_SUBSET[@]}"
else
    fail "api: api.rs subset"
fi

export QLINEAR_REQUIRE=avx2,avxvnni

step "kernels: avx2"
if miri_test kernels tree "$KERNEL_FEATURES" -p qlinear-kernels-x86 --lib -- \
    --exact registry_tests::avx2; then
    expect_passed "kernel avx2" 1
else
    fail "kernel avx2"
fi

step "kernels: avxvnni"
vnni_features=$KERNEL_FEATURES
if miri_test kernels tree "$KERNEL_FEATURES" -p qlinear-kernels-x86 --lib -- \
    --exact registry_tests::avxvnni; then
    expect_passed "kernel avxvnni" 1
elif grep -q 'intrinsic `llvm.x86.avx512.vpdpbusd.256` that requires missing target feature' \
    "$last_log"; then
    echo
    echo "miri: Miri refused the AVX-VNNI kernel's vpdpbusd ymm with the kernel's own features:"
    grep -m1 -o 'error: .*requires missing target feature.*' "$last_log" | sed 's/^/miri:   /'
    echo "miri: Miri's implementation of llvm.x86.avx512.vpdpbusd.256 checks for avx512vnni"
    echo "miri: and avx512vl, but the AVX-VNNI intrinsic _mm256_dpbusd_avx_epi32 (VEX) calls the"
    echo "miri: same LLVM intrinsic as the AVX512-VNNI+VL _mm256_dpbusd_epi32 (EVEX), for the"
    echo "miri: same operation. Running the AVX-VNNI kernel again with $VNNI_SHIM_FEATURES added."
    vnni_features=$KERNEL_FEATURES,$VNNI_SHIM_FEATURES
    step "kernels: avxvnni with $VNNI_SHIM_FEATURES (for Miri's vpdpbusd.256)"
    if miri_test kernels tree "$vnni_features" -p qlinear-kernels-x86 --lib -- \
        --exact registry_tests::avxvnni; then
        expect_passed "kernel avxvnni" 1
    else
        fail "kernel avxvnni (with $VNNI_SHIM_FEATURES for Miri's vpdpbusd.256)"
    fi
else
    fail "kernel avxvnni"
fi

step "kernels-sb: avx2 and avxvnni under Stacked Borrows"
if miri_test kernels-sb stacked "$vnni_features" -p qlinear-kernels-x86 --lib -- \
    --exact registry_tests::avx2 registry_tests::avxvnni; then
    expect_passed "kernels under Stacked Borrows" 2
else
    fail "kernels under Stacked Borrows"
fi

step "packers: avx2 and avxvnni c4 packers against the reference packer (tests/pack_exact.rs)"
if miri_test packers tree "$vnni_features" -p qlinear-kernels-x86 --test pack_exact -- \
    --exact avx2_packer_matches_reference avxvnni_packer_matches_reference; then
    expect_passed "packers" 2
else
    fail "packers"
fi

step "api-kernels: errors.rs, review_defects.rs on every engine (features $vnni_features)"
miri_test api-kernels tree "$vnni_features" -p qlinear --no-fail-fast \
    --test errors --test review_defects ||
    fail "api-kernels: errors.rs / review_defects.rs"

step "AVX-512"
echo "miri: Miri cannot run the AVX-512 kernels: not tested under Miri."
echo "miri: Why: the avx512vnni kernel test built with -Ctarget-feature=$AVX512_FEATURES"
export QLINEAR_REQUIRE=avx512vnni
avx512_ran=
if QUIET=1 miri_test avx512 tree "$AVX512_FEATURES" -p qlinear-kernels-x86 --lib -- \
    --exact registry_tests::avx512vnni; then
    avx512_ran=yes
    echo "miri: the avx512vnni kernel test RAN under Miri and passed: this Miri implements"
    echo "miri: every intrinsic it uses. Make it a regular stage (and fix these messages)."
elif grep -q 'error: unsupported operation' "$last_log"; then
    grep -m1 -o 'error: unsupported operation.*' "$last_log" | sed 's/^/miri:   /'
    grep -m1 -E '^ +--> ' "$last_log" | sed 's/^ *--> /miri:   at /'
    echo "miri:   (full output: $last_log)"
else
    tail -n 40 "$last_log"
    fail "avx512vnni: Miri ended with something else than 'unsupported operation'"
fi
unset QLINEAR_REQUIRE

step "summary"
total=0
for s in "${stages[@]}"; do
    [ "$s" != avx512 ] || [ -n "$avx512_ran" ] || continue
    p=${passed[$s]:-0}
    f=${failed[$s]:-0}
    total=$((total + p))
    printf 'miri: %-12s %3d tests run, %3d passed, %d failed, %d ignored\n' \
        "$s" "$((p + f))" "$p" "$f" "${ignored[$s]:-0}"
done
echo "miri: kernels:${names[kernels]:- none}"
if [ "$vnni_features" != "$KERNEL_FEATURES" ]; then
    echo "miri: (avxvnni, kernels-sb and api-kernels built with $VNNI_SHIM_FEATURES added"
    echo "miri:  for Miri's vpdpbusd.256, see the kernels stage)"
fi
[ -n "$avx512_ran" ] ||
    echo "miri: avx512vnni: not tested under Miri (Miri lacks some of its AVX-512 intrinsics)"
echo "miri: $total tests passed under Miri in $(( $(date +%s) - start ))s (logs: $logdir)"
if [ "${#failures[@]}" -ne 0 ]; then
    printf 'miri: FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
