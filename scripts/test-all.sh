#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, test data generation and the whole test suite.
# Usage: ./scripts/test-all.sh   (from anywhere)
# Needs the Rust toolchain and python3 with pip; installs the pinned Python packages that
# build the ONNX test models (onnx) and compute their expected outputs (onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== test models (onnx.helper + onnxruntime reference outputs)"
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
python3 scripts/make_test_models.py target/testmodels > /dev/null

echo "== ONNX node conformance (onnx-test; the pass count may only rise: tests/conformance-floor.txt)"
python3 scripts/make_node_tests.py target/nodetests > /dev/null
cargo build --locked --quiet --bin tessera
./target/debug/tessera onnx-test target/nodetests --support-table target/onnx-support.md > target/onnx-test.log || {
    grep '^FAIL' target/onnx-test.log | head -50
    echo "onnx-test: some node test cases failed (full log: target/onnx-test.log)"
    exit 1
}
tail -n 1 target/onnx-test.log
passed=$(tail -n 1 target/onnx-test.log | awk '{print $1}')
floor=$(cat tests/conformance-floor.txt)
if [ "$passed" -lt "$floor" ]; then
    echo "onnx-test: $passed node test cases pass, below the floor of $floor"
    exit 1
fi
# The JIT must pass every case the emulator passes.
./target/debug/tessera onnx-test target/nodetests --backend jit > target/onnx-test-jit.log || {
    grep '^FAIL' target/onnx-test-jit.log | head -50
    echo "onnx-test --backend jit: some node test cases failed (full log: target/onnx-test-jit.log)"
    exit 1
}
echo "jit: $(tail -n 1 target/onnx-test-jit.log)"
# The op-by-op baseline (-O0, no optimiser) must pass every case the default level passes.
./target/debug/tessera onnx-test target/nodetests -O 0 > target/onnx-test-o0.log || {
    grep '^FAIL' target/onnx-test-o0.log | head -50
    echo "onnx-test -O 0: some node test cases failed (full log: target/onnx-test-o0.log)"
    exit 1
}
echo "-O0: $(tail -n 1 target/onnx-test-o0.log)"
if [ "$(tail -n 1 target/onnx-test-o0.log | awk '{print $1}')" -ne "$passed" ]; then
    echo "onnx-test: -O0 passes a different number of cases than -O2"
    exit 1
fi
if [ "$(tail -n 1 target/onnx-test-jit.log | awk '{print $1}')" -ne "$passed" ]; then
    echo "onnx-test: the jit passes a different number of cases than interp"
    exit 1
fi

echo "== real models (9 ImageNet CNNs, a BERT layer and a GPT decoder vs onnxruntime; the pass count may only rise: tests/realmodels-floor.txt)"
./scripts/test-real-models.sh

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary and doc-test run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1); if ($(i) ~ /^ignored/) s += $(i-1) } }
     END { printf "tessera: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
