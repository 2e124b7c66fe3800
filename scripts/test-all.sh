#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, and the whole test suite.
# Usage: ./scripts/test-all.sh   (from anywhere; needs the Rust toolchain, and Python with
# scripts/requirements-test.txt installed for the ONNX test models)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== ONNX test models"
python3 scripts/make_test_models.py target/testmodels >/dev/null

echo "== cargo test"
cargo test --workspace --locked
