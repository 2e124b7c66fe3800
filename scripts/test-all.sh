#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, test data generation and the whole test suite,
# with the mlir backend (cargo feature `mlir`) built and tested too.
# Usage: ./scripts/test-all.sh   (from anywhere)
# Needs the Rust toolchain and python3 with pip; installs the pinned Python packages that
# build the ONNX test models (onnx) and compute their expected outputs (onnxruntime), and
# Debian's LLVM 19 MLIR packages for the mlir backend (scripts/install-mlir.sh; root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== mlir backend: LLVM 19's MLIR (Debian packages) and clippy with --features mlir"
./scripts/install-mlir.sh
cargo clippy --workspace --all-targets --locked --features mlir -- -D warnings

echo "== test models (onnx.helper + onnxruntime reference outputs)"
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
python3 scripts/make_test_models.py target/testmodels > /dev/null

echo "== ONNX node conformance (onnx-test; the pass count may only rise: tests/conformance-floor.txt)"
python3 scripts/make_node_tests.py target/nodetests > /dev/null
# The CLI steps use a binary with the mlir backend (a superset of the default build).
cargo build --locked --quiet --features mlir --bin tessera
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
# And so must the mlir backend.
./target/debug/tessera onnx-test target/nodetests --backend mlir > target/onnx-test-mlir.log || {
    grep '^FAIL' target/onnx-test-mlir.log | head -50
    echo "onnx-test --backend mlir: some node test cases failed (full log: target/onnx-test-mlir.log)"
    exit 1
}
echo "mlir: $(tail -n 1 target/onnx-test-mlir.log)"
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
for backend in jit mlir; do
    if [ "$(tail -n 1 "target/onnx-test-$backend.log" | awk '{print $1}')" -ne "$passed" ]; then
        echo "onnx-test: the $backend backend passes a different number of cases than interp"
        exit 1
    fi
done
# What `inspect --emit mlir` prints is MLIR that LLVM's own parser accepts.
./target/debug/tessera inspect examples/models/mlp/model.onnx --emit mlir > target/mlp.mlir
/usr/lib/llvm-19/bin/mlir-opt target/mlp.mlir > /dev/null
echo "inspect --emit mlir: $(sed -n 2p target/mlp.mlir | cut -c 4-), parsed by mlir-opt-19"

echo "== real models (9 ImageNet CNNs, a BERT layer and a GPT decoder vs onnxruntime; the pass count may only rise: tests/realmodels-floor.txt)"
TESSERA=./target/debug/tessera BACKENDS="interp jit mlir" ./scripts/test-real-models.sh

echo "== examples (each runs and checks its own numbers)"
for example in quickstart custom_op flash_attention; do
    cargo run --locked --quiet --example "$example" > "target/example-$example.log" 2>&1 || {
        cat "target/example-$example.log"
        echo "example $example failed"
        exit 1
    }
    echo "$example: $(tail -n 1 "target/example-$example.log")"
done

echo "== mlir backend tests (the jit's tests, with MLIR kernels too)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked -p tessera-backends --features mlir --test jit_ops --test jit_models --test jit_errors 2>&1 | tee "$log"
mlir_status=${PIPESTATUS[0]}
set -e

echo "== cargo test"
set +e
cargo test --workspace --locked 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary and doc-test run (the mlir runs included).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1); if ($(i) ~ /^ignored/) s += $(i-1) } }
     END { printf "tessera: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
if [ "$mlir_status" -ne 0 ]; then
    echo "the mlir backend tests failed"
    exit "$mlir_status"
fi
exit "$status"
