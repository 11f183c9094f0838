#!/usr/bin/env bash
# ARM CI: cross-build the workspace for aarch64 and run it under qemu-user.
#
#   1. installs qemu-user + the aarch64 GNU cross toolchain (apt) and the Rust target;
#   2. runs the whole workspace test suite under `qemu-aarch64 -cpu max` (dotprod + i8mm)
#      with QLINEAR_REQUIRE=neon,neondot,i8mm, so a missing backend fails instead of
#      skipping;
#   3. per CPU model (cortex-a53: NEON only; cortex-a76: + dotprod; max: + i8mm) runs the
#      ARM kernel tests, the Auto-dispatch test (QLINEAR_EXPECT_AUTO) and `qlinear info`,
#      checking the `auto:` line;
#   4. replays the torch conformance file on every backend under -cpu max.
#
# The runner in .cargo/config.toml pins `-cpu max`; other models are selected by
# overriding it through CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER (a `-cpu` flag
# wins over QEMU_CPU). qemu timings mean nothing; this job checks exactness and dispatch.
# Budget: ~20 minutes on 2 cores (tests use [profile.test] opt-level = 2; proptest cases
# default to 16 under emulation, override with PROPTEST_CASES).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
export CARGO_TARGET_DIR="${ARM_TARGET_DIR:-$ROOT/target/arm-ci}"
export PROPTEST_CASES="${PROPTEST_CASES:-16}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== arm.sh: %s ===\n' "$*"; }

step "toolchain"
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
    || [ ! -d "$SYSROOT/lib" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y \
        qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi
rustup target add "$TARGET"
qemu-aarch64 --version | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail

runner_for() { echo "qemu-aarch64 -L $SYSROOT -cpu $1"; }

step "workspace tests under -cpu max (QLINEAR_REQUIRE=neon,neondot,i8mm)"
# minilm is left out: its model run under emulation would take most of the budget and
# adds nothing the kernel and layer tests do not check (it is plain f32 Rust around
# DynamicLinear); .ci/minilm.sh runs it natively.
# QLINEAR_CLI_RUNNER: the CLI tests spawn the aarch64 `qlinear` binary through qemu too.
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$(runner_for max)" \
QLINEAR_CLI_RUNNER="$(runner_for max)" \
QLINEAR_REQUIRE=neon,neondot,i8mm \
    cargo test --workspace --exclude minilm --exclude qlinear-py --target "$TARGET"

cargo build --profile test --target "$TARGET" -p qlinear-cli --bin qlinear
QLINEAR_BIN="$CARGO_TARGET_DIR/$TARGET/debug/qlinear"

for spec in cortex-a53:neon:neon cortex-a76:neondot:neon,neondot max:i8mm:neon,neondot,i8mm; do
    IFS=: read -r cpu expect require <<<"$spec"
    step "-cpu $cpu: expect auto = $expect, require $require"
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$(runner_for "$cpu")" \
    QLINEAR_REQUIRE="$require" QLINEAR_EXPECT_AUTO="$expect" \
        cargo test --target "$TARGET" -p qlinear-kernels-arm
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$(runner_for "$cpu")" \
    QLINEAR_REQUIRE="$require" QLINEAR_EXPECT_AUTO="$expect" \
        cargo test --target "$TARGET" -p qlinear --test arm_auto_dispatch
    info="$(env -u QLINEAR_BACKEND qemu-aarch64 -L "$SYSROOT" -cpu "$cpu" "$QLINEAR_BIN" info)"
    echo "$info"
    got="$(sed -n 's/^auto: //p' <<<"$info")"
    if [ "$got" != "$expect" ]; then
        echo "arm.sh: qlinear info under -cpu $cpu says auto: '$got', expected '$expect'" >&2
        exit 1
    fi
done

step "conformance, every backend, -cpu max"
qemu-aarch64 -L "$SYSROOT" -cpu max "$QLINEAR_BIN" conformance --backend all \
    conformance/torch-2.15-public.json

step "ok"
