#!/usr/bin/env bash
# What a user of the published crate sees: `bash .ci/package.sh`.
#
#   1. the examples of the `qlinear` crate (crates/qlinear/examples/*.rs), each built
#      and run (release) so a broken example fails CI, not a user;
#   2. the README's usage example as pasted: a fresh `cargo new` project, `cargo add
#      --path crates/qlinear`, the first ```rust block after "## Usage" as its
#      src/main.rs, then `cargo run`;
#   3. `cargo publish --workspace --dry-run`: every publishable crate packages and its
#      packaged copy builds against the others (crates.io index needed, no upload);
#   4. the library on the declared `rust-version` toolchain (read from Cargo.toml).
#
# CARGO_TARGET_DIR is honoured (the scratch project is built under it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
export CARGO_TERM_COLOR=never
target=${CARGO_TARGET_DIR:-$root/target}
start=$(date +%s)
step() { printf '\n=== package: %s (+%ss) ===\n' "$*" "$(( $(date +%s) - start ))"; }

step "examples of the qlinear crate"
examples=$(find crates/qlinear/examples -maxdepth 1 -name '*.rs' -printf '%f\n' | sed 's/\.rs$//' | sort)
if [ -z "$examples" ]; then
    echo "package.sh: no examples found in crates/qlinear/examples" >&2
    exit 1
fi
for ex in $examples; do
    step "example $ex"
    cargo run --release -q -p qlinear --example "$ex"
done

step "README usage example, pasted into a fresh project"
# Outside the repository: inside it, `cargo new` would join the workspace (and dirty
# Cargo.toml) instead of being a user's own project.
scratch_root=$(mktemp -d)
trap 'rm -rf "$scratch_root"' EXIT
scratch="$scratch_root/readme-app"
cargo new -q --vcs none "$scratch"
(cd "$scratch" && cargo add -q --path "$root/crates/qlinear")
awk '/^## Usage/ {usage=1} usage && /^```rust/ {grab=1; next} grab && /^```/ {exit} grab {print}' \
    README.md >"$scratch/src/main.rs"
if [ ! -s "$scratch/src/main.rs" ]; then
    echo "package.sh: found no \`\`\`rust block after '## Usage' in README.md" >&2
    exit 1
fi
if grep -n '^# ' "$scratch/src/main.rs"; then
    echo "package.sh: the README example has rustdoc hidden lines; it must compile as pasted" >&2
    exit 1
fi
(cd "$scratch" && CARGO_TARGET_DIR="$target/readme-app-target" cargo run -q)

step "cargo publish --workspace --dry-run"
# The dry run verifies each crate against its siblings through a temporary local
# registry (target/package/tmp-registry), whose crates cargo unpacks under
# $CARGO_HOME/registry/src/-<hash of the registry path>/ and, like any registry source,
# never unpacks again while that directory exists. A later run from a checkout at the same
# path would then build against the earlier run's sources of the same version (seen: the
# x86 kernels verified against a stale qlinear-reference without RowQParams). Those
# unpacked copies of our own crates are only ever this check's, so drop them first.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/qlinear*
cargo publish --workspace --dry-run

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
step "build on the declared rust-version ($msrv)"
# rustup names an installed 1.95.0 "1.95.0"; "1.95" alone would ask for the newest 1.95.x.
for name in "$msrv" "$msrv.0"; do
    if rustup run "$name" rustc --version >/dev/null 2>&1; then msrv=$name; break; fi
done
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$msrv" --profile minimal
fi
# Both feature extremes, warnings denied (clippy covers only the default features).
for features in --all-features --no-default-features; do
    RUSTFLAGS="-D warnings" CARGO_TARGET_DIR="$target/msrv" \
        cargo "+$msrv" build -q -p qlinear "$features"
done
rustup run "$msrv" rustc --version

step "ok"
