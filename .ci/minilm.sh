#!/usr/bin/env bash
# MiniLM end to end (examples/minilm): `bash .ci/minilm.sh`.
#
#   1. the model, fetched and unpacked once into the cache (.ci/minilm-model.sh);
#   2. the crate's tests in release, the model required (QLINEAR_REQUIRE_MINILM=1):
#      int8 vs f32 accuracy, f32 vs sentence-transformers' published similarities,
#      error paths;
#   3. one CLI run with --compare --json, the JSON checked (two sentences, 384 finite
#      floats each, unit norm, a reference block from the f32 run);
#   4. a --bench smoke run (3 runs; the figures are informative, not checked).
#
# CARGO_TARGET_DIR is honoured; reuse the workspace's so tokenizers builds once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
step() { printf '\n=== minilm: %s (+%ss) ===\n' "$*" "$(( $(date +%s) - start ))"; }

step "model"
model=$(bash .ci/minilm-model.sh)
echo "$model"
export QLINEAR_MINILM_DIR="$model"

step "cargo test --release -p minilm (model required)"
QLINEAR_REQUIRE_MINILM=1 cargo test --release -p minilm -- --nocapture --test-threads 1

step "CLI: --compare --json"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo run --release -q -p minilm -- --model "$model" --compare --json "$out/emb.json" \
    "A man is eating food." "A man is eating a piece of bread."
python3 - "$out/emb.json" <<'PY'
import json, math, sys
d = json.load(open(sys.argv[1]))
def check(doc, what):
    emb = doc["embeddings"]
    assert len(emb) == len(doc["sentences"]) == 2, f"{what}: {len(emb)} embeddings"
    for e in emb:
        assert len(e) == 384, f"{what}: embedding of {len(e)} floats"
        assert all(isinstance(v, float) and math.isfinite(v) for v in e), what
        n = math.sqrt(sum(v * v for v in e))
        assert abs(n - 1) < 1e-4, f"{what}: norm {n}"
    for k in ("load", "tokenize", "encode"):
        assert doc["seconds"][k] >= 0, f"{what}: seconds.{k}"
check(d, d["mode"])
assert d["mode"].startswith("int8"), d["mode"]
check(d["reference"], "f32")
cos = d["reference"]["cosine_to_reference"]
assert len(cos) == 2 and min(cos) > 0.95, cos
print(f"json ok: {d['mode']} vs f32 cosines {cos}")
PY

step "CLI: --bench smoke (batch of 32, one thread, int8 vs f32)"
cargo run --release -q -p minilm -- --model "$model" --compare --threads 1 --bench 3 | tail -n 4

step "done"
