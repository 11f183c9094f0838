#!/usr/bin/env bash
# The Python package (crates/qlinear-py) as a user gets it:
#   1. builds the abi3 wheel with maturin (`maturin build --release`);
#   2. installs it into a fresh venv with numpy and pytest (no torch: its wheel is
#      several GB; the torch-interop tests skip with a printed reason, and the note of
#      the issue that added them records a run with torch 2.15);
#   3. runs the pytest suite from outside the source tree, so the installed wheel is
#      what is imported, and fails if pytest collected no tests or ran none;
#   4. installs the same wheel into a second CPython (3.9 / 3.12 / 3.13, whichever the
#      machine has) and runs the conformance tests there: one abi3 wheel serves them all;
#   5. `pip install ./crates/qlinear-py` (the README's way) into another fresh venv, and
#      the README's Python example.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
work=$target/python-ci
rm -rf "$work"
mkdir -p "$work"
step() { printf '\n--- python: %s ---\n' "$*"; }

PY=${PYTHON:-python3}
"$PY" --version

step "build tools venv (maturin)"
"$PY" -m venv "$work/tools"
"$work/tools/bin/pip" install -q --upgrade pip
"$work/tools/bin/pip" install -q "maturin>=1.9,<2"
"$work/tools/bin/maturin" --version

step "maturin build --release (abi3 wheel)"
"$work/tools/bin/maturin" build --release -m crates/qlinear-py/Cargo.toml -o "$work/wheels"
wheel=$(ls "$work"/wheels/qlinear-*.whl)
echo "wheel: $(basename "$wheel")"
case $(basename "$wheel") in
*-abi3-*) ;;
*) echo "expected an abi3 wheel, got $(basename "$wheel")" >&2; exit 1 ;;
esac

step "fresh venv: the wheel + numpy + pytest"
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
"$work/venv/bin/pip" install -q numpy pytest
"$work/venv/bin/pip" install -q "$wheel"

step "pytest crates/qlinear-py/tests"
# Run from an empty directory with the tests given by path: `import qlinear` must find
# the installed wheel, not crates/qlinear-py/python.
mkdir -p "$work/run"
(
    cd "$work/run"
    "$work/venv/bin/python" -c 'import qlinear, sys; print("qlinear from", qlinear.__file__); sys.exit("imported the source tree, not the wheel") if "/crates/qlinear-py/" in qlinear.__file__ else None'
    status=0
    "$work/venv/bin/python" -m pytest "$root/crates/qlinear-py/tests" -q -rs \
        -p no:cacheprovider --junitxml="$work/pytest.xml" || status=$?
    # pytest exits 5 when it collected nothing; that is a failure here too.
    [ "$status" -eq 0 ] || { echo "pytest failed (exit $status)" >&2; exit 1; }
)
"$work/venv/bin/python" - "$work/pytest.xml" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
tests, skipped = int(suite.get("tests")), int(suite.get("skipped"))
failures, errors = int(suite.get("failures")), int(suite.get("errors"))
ran = tests - skipped
print(f"pytest: {tests} collected, {ran} ran, {skipped} skipped, {failures} failed, {errors} errors")
if tests == 0 or ran < 50 or failures or errors:
    sys.exit("the Python suite must collect and run tests (at least 50 that are not skipped)")
PYEOF

step "the same abi3 wheel on another CPython"
other=""
for v in 3.9 3.12 3.13 3.10; do
    if command -v "python$v" >/dev/null 2>&1 && "python$v" -c 'import venv' 2>/dev/null; then
        other=python$v
        break
    fi
done
if [ -n "$other" ]; then
    "$other" -m venv "$work/venv-other"
    "$work/venv-other/bin/pip" install -q numpy pytest
    "$work/venv-other/bin/pip" install -q "$wheel"
    (cd "$work/run" && "$work/venv-other/bin/python" -m pytest \
        "$root/crates/qlinear-py/tests/test_conformance.py" -q -p no:cacheprovider)
else
    echo "no second CPython on this machine (looked for 3.9, 3.12, 3.13, 3.10): skipped"
fi

step "pip install ./crates/qlinear-py (the README's way) + the README example"
"$PY" -m venv "$work/venv-pip"
"$work/venv-pip/bin/pip" install -q --upgrade pip
"$work/venv-pip/bin/pip" install -q ./crates/qlinear-py
# The README's "From Python" example, as printed there.
python_example=$(awk '/^<!-- python-example -->$/{flag=1; next} /^```$/{if(flag){exit}} flag && !/^```python$/' README.md)
[ -n "$python_example" ] || { echo "README has no python-example block" >&2; exit 1; }
(cd "$work/run" && "$work/venv-pip/bin/python" -c "$python_example")
echo "python: ok"
