#!/usr/bin/env bash
# MiniLM end to end (examples/minilm): `bash .ci/minilm.sh`.
#
#   1. the model, fetched and unpacked once into the cache (.ci/minilm-model.sh);
#   2. the crate's tests in release, the model required (QLINEAR_REQUIRE_MINILM=1):
#      int8 vs f32 accuracy, f32 vs sentence-transformers' published similarities,
#      error paths;
#   3. one CLI run with --compare --json, the JSON checked (two sentences, 384 finite
#      floats each, unit norm, a reference block from the f32 run);
#   4. a --bench smoke run (3 runs; the figures are informative, not checked);
#   5. the issue's "done when": the checkpoint quantized with `qlinear quantize
#      --per-channel`, loaded by the example (--weights), and its --json embeddings
#      checked equal, float for float, to quantizing at load with the same settings;
#      also per-row (--per-row) on both paths.
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

step "qlinear quantize --per-channel, then the example on the quantized checkpoint"
mkdir -p "$out/q"
cargo run --release -q -p qlinear-cli -- quantize "$model/model.safetensors" \
    "$out/q/model.safetensors" --per-channel
# A model directory of its own: the quantized checkpoint next to the model's other files.
for f in "$model"/*; do
    [ "$(basename "$f")" = model.safetensors ] || ln -s "$f" "$out/q/"
done
sentences=("A man is eating food." "A man is eating a piece of bread." \
    "The girl is carrying a baby." "Quantized linear layers trade a little accuracy for speed.")
for rows in "" "--per-row"; do
    cargo run --release -q -p minilm -- --model "$model" $rows \
        --json "$out/float${rows}.json" "${sentences[@]}" >/dev/null
    # The quantized directory, and (per-row) --weights on the float directory.
    if [ -z "$rows" ]; then src=(--model "$out/q"); else src=(--model "$model" --weights "$out/q/model.safetensors"); fi
    cargo run --release -q -p minilm -- "${src[@]}" $rows \
        --json "$out/quantized${rows}.json" "${sentences[@]}"
    python3 - "$out/float${rows}.json" "$out/quantized${rows}.json" <<'PY'
import json, struct, sys
f, q = (json.load(open(p)) for p in sys.argv[1:3])
assert f["mode"] == q["mode"], (f["mode"], q["mode"])
assert f["sentences"] == q["sentences"]
assert f["checkpoint_quantized_layers"] == 0, f["checkpoint_quantized_layers"]
assert q["checkpoint_quantized_layers"] == 36, q["checkpoint_quantized_layers"]
bits = lambda doc: [[struct.pack("<f", v) for v in e] for e in doc["embeddings"]]
assert len(q["embeddings"]) == len(f["sentences"]) == 4
assert all(len(e) == 384 for e in q["embeddings"])
# serde_json writes f32s exactly (shortest round trip), so equal floats are equal bits.
assert bits(f) == bits(q), "quantized checkpoint's embeddings differ from quantizing at load"
print(f"quantized checkpoint ok: {q['mode']}, {len(q['embeddings'])} embeddings equal "
      f"to quantizing at load, bit for bit")
PY
done
# f32 needs the float weights: a clear error, not a panic.
if err=$(cargo run --release -q -p minilm -- --model "$out/q" --f32 "hello" 2>&1); then
    echo "--f32 on a quantized checkpoint should fail" >&2; exit 1
fi
grep -q "int8" <<<"$err" && ! grep -q panicked <<<"$err" || { echo "$err" >&2; exit 1; }
echo "--f32 on the quantized checkpoint: $err"

step "done"
