#!/usr/bin/env bash
# The real-model check CI runs: writes the eleven real-model cases (scripts/make_real_models.py:
# nine ImageNet CNNs from the onnx package's light models with seeded weights, a BERT encoder
# layer and a GPT decoder) into target/realmodels and runs them with `tessera onnx-test` on
# the interp backend, then on the jit (and on each backend named in BACKENDS). Fails when a
# case fails on any backend, when fewer cases pass on interp than tests/realmodels-floor.txt,
# or when another backend passes a different number of cases than interp.
# Usage: ./scripts/test-real-models.sh   (from anywhere; TESSERA=path/to/tessera skips the build;
# BACKENDS="interp jit mlir" with a tessera built with --features mlir adds the mlir backend)
# Needs the Rust toolchain and python3 with pip (installs scripts/requirements-test.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/realmodels
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
mkdir -p target
python3 scripts/make_real_models.py "$out" > target/realmodels-make.log || {
    cat target/realmodels-make.log
    echo "make_real_models.py failed"
    exit 1
}
tail -n 1 target/realmodels-make.log

# The dev build test-all.sh already made: the workspace's dev profile is optimised (opt-level
# 1, dependencies 2), within 1.3-1.7x of release on these models, and saves CI a release build.
if [ -z "${TESSERA:-}" ]; then
    cargo build --locked --quiet --bin tessera
    TESSERA=./target/debug/tessera
fi

passed_on() {
    tail -n 1 "target/realmodels-$1.log" | awk '{print $1}'
}

backends=${BACKENDS:-interp jit}
for backend in $backends; do
    log="target/realmodels-$backend.log"
    start=$SECONDS
    "$TESSERA" onnx-test "$out" --backend "$backend" > "$log" || {
        grep '^FAIL' "$log"
        echo "real models, $backend: some cases failed (full log: $log)"
        exit 1
    }
    grep -E '^(PASS|SKIP)' "$log" | cut -c 1-160
    echo "$backend: $(tail -n 1 "$log") in $((SECONDS - start)) s"
done

floor=$(cat tests/realmodels-floor.txt)
if [ "$(passed_on interp)" -lt "$floor" ]; then
    echo "real models: $(passed_on interp) cases pass on interp, below the floor of $floor"
    exit 1
fi
for backend in $backends; do
    if [ "$(passed_on "$backend")" -ne "$(passed_on interp)" ]; then
        echo "real models: $backend passes a different number of cases than interp"
        exit 1
    fi
done

# The optimiser's targets, on the timing model (modelled latency, deterministic, not wall
# clock): -O2 at least 1.5x faster than -O0 on the BERT layer and the GPT decoder, 1.2x on
# ResNet-50.
for pair in bert_encoder_layer:1.5 gpt_decoder_2block:1.5 resnet50:1.2; do
    model=${pair%%:*}
    want=${pair##*:}
    lat() {
        "$TESSERA" profile --json "$out/$model/model.onnx" -O "$1" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["latency_us"])'
    }
    o0=$(lat 0)
    o2=$(lat 2)
    python3 - "$model" "$o0" "$o2" "$want" <<'PY'
import sys
model, o0, o2, want = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ratio = o0 / o2
print(f"{model}: modelled latency -O0 {o0:.1f} us, -O2 {o2:.1f} us: {ratio:.2f}x (target {want}x)")
if ratio < want:
    sys.exit(f"{model}: -O2 is only {ratio:.2f}x faster than -O0 on the timing model")
PY
done

