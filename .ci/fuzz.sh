#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target of fuzz/ for a fixed budget: `bash .ci/fuzz.sh`.
#
#   1. installs what it needs if missing: the nightly toolchain (minimal profile) and
#      cargo-fuzz (pinned);
#   2. lists the targets with `cargo fuzz list` (every [[bin]] of fuzz/Cargo.toml, so new
#      targets are picked up without touching this script) and requires a checked-in
#      seed corpus, fuzz/corpus/<target>/, for each;
#   3. builds them all once (release, debug assertions, AddressSanitizer);
#   4. runs each for FUZZ_SECONDS (default 60) on a copy of its seed corpus in
#      fuzz/target/fuzz-work/<target>/ (the checked-in corpus is never written), with
#      crash inputs saved there too;
#   5. prints executions, coverage (cov = edges) and features (ft) per target, and fails
#      if any target crashed, timed out, ran out of memory or did not finish cleanly.
#
# Environment: FUZZ_SECONDS (per target, default 60), FUZZ_RSS_MB (default 2048),
# FUZZ_TIMEOUT (seconds per input, default 30). CARGO_TARGET_DIR is honoured as cargo
# does (cargo-fuzz's default is fuzz/target).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-30}
CARGO_FUZZ_VERSION=0.13.2
# The same build options for `build` and `run`, so `run` reuses the build.
BUILD_OPTS=(--release --debug-assertions --sanitizer address)
export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0

start=$(date +%s)
step() { printf '\n=== fuzz: %s (+%ss) ===\n' "$*" "$(( $(date +%s) - start ))"; }

step "toolchain"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
rustup run nightly rustc --version
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
cargo +nightly fuzz --version

step "targets"
mapfile -t targets < <(cargo +nightly fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz: cargo fuzz list found no targets" >&2
    exit 1
fi
missing=0
for t in "${targets[@]}"; do
    seeds=$root/fuzz/corpus/$t
    if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
        echo "fuzz: $t has no seed corpus in fuzz/corpus/$t (see fuzz/README.md)" >&2
        missing=1
    else
        echo "$t: $(ls "$seeds" | wc -l) seeds"
    fi
done
[ "$missing" -eq 0 ] || exit 1

step "build (${BUILD_OPTS[*]})"
cargo +nightly fuzz build "${BUILD_OPTS[@]}"

work_root=$root/fuzz/target/fuzz-work
summary=()
failed=0
for t in "${targets[@]}"; do
    step "run $t for ${FUZZ_SECONDS}s"
    work=$work_root/$t
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/artifacts"
    cp -R "$root/fuzz/corpus/$t/." "$work/corpus/"
    log=$work/fuzz.log
    status=0
    cargo +nightly fuzz run "${BUILD_OPTS[@]}" "$t" "$work/corpus" -- \
        -max_total_time="$FUZZ_SECONDS" \
        -rss_limit_mb="$FUZZ_RSS_MB" \
        -timeout="$FUZZ_TIMEOUT" \
        -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" \
        >"$log" 2>&1 || status=$?

    # libFuzzer's last status line (`#N DONE cov: X ft: Y corp: ...`, or the last
    # progress line before a crash) and its final stats.
    last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: [0-9]+' | tail -n 1 || true)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$last")
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
    rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    result=ok
    if [ "$status" -ne 0 ] || ! grep -qE '^#[0-9]+[[:space:]]+DONE' "$log"; then
        result="FAILED (exit $status)"
        failed=1
        echo "--- last lines of $log:"
        tail -n 60 "$log"
        for a in "$work"/artifacts/*; do
            [ -e "$a" ] || continue
            echo "fuzz: $t: artifact $a"
            echo "  reproduce: cargo +nightly fuzz run ${BUILD_OPTS[*]} $t $a"
        done
    else
        grep -E '^#[0-9]+[[:space:]]+DONE|^Done|^stat::' "$log" || true
    fi
    summary+=("fuzz: $t: ${execs:-?} execs, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, ${rate:-?} exec/s: $result")
done

step "summary"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "fuzz: FAILED (logs and crash inputs in $work_root)" >&2
    exit 1
fi
