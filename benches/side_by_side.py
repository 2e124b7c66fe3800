#!/usr/bin/env python3
"""Side-by-side host execution benchmark: tessera's backends against onnxruntime and tract.

Every runtime runs the same models on the same inputs in one process tree, one after the other,
so the ratios compare like with like on this machine:

* tessera: `tessera bench MODEL --backend B --iters N --json` for each backend (the model is
  compiled once, then run N times; the median run is reported, compilation separately);
* onnxruntime: CPU provider, one intra-op and one inter-op thread, default graph optimisations;
* tract: the Python bindings' typed model (`load().into_model().into_runnable()`), one thread.

A model is a directory as `scripts/make_real_models.py` writes them (`model.onnx` and
`test_data_set_0/input_*.pb`); the inputs of `test_data_set_0` feed every runtime.

    pip install -r benches/requirements.txt
    cargo build --release
    python3 benches/side_by_side.py target/realmodels/bert_encoder_layer target/realmodels/resnet50

Prints a table per model (load and median time per run, and each runtime's time over
onnxruntime's), and with `--json FILE` writes the same figures.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def load_inputs(model_dir):
    """The model's inputs from test_data_set_0, by graph input name, in graph order."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    data = model_dir / "test_data_set_0"
    inputs = {}
    for i, name in enumerate(names):
        path = data / f"input_{i}.pb"
        if not path.exists():
            raise SystemExit(f"{model_dir}: {path} is missing (make the models first)")
        t = onnx.TensorProto()
        t.ParseFromString(path.read_bytes())
        inputs[name] = np.ascontiguousarray(numpy_helper.to_array(t))
    return inputs


def time_runs(run, iters, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def summary(load_ms, times):
    return {
        "load_ms": load_ms,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "iters": len(times),
    }


def bench_ort(model_dir, inputs, iters, warmup):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t = time.perf_counter()
    sess = ort.InferenceSession(
        str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    load_ms = (time.perf_counter() - t) * 1e3
    times = time_runs(lambda: sess.run(None, inputs), iters, warmup)
    return summary(load_ms, times)


def bench_tract(model_dir, inputs, iters, warmup):
    import tract

    t = time.perf_counter()
    model = tract.onnx().load(str(model_dir / "model.onnx")).into_model()
    runnable = model.into_runnable()
    load_ms = (time.perf_counter() - t) * 1e3
    feeds = list(inputs.values())
    times = time_runs(lambda: runnable.run(feeds), iters, warmup)
    return summary(load_ms, times)


def bench_tessera(exe, model_dir, inputs, backend, iters, warmup):
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        cmd = [
            exe, "bench", str(model_dir / "model.onnx"), "--backend", backend,
            "--iters", str(iters), "--warmup", str(warmup), "--json",
        ]
        # Input names may hold '/' (ResNet-50's `gpu_0/data_0`): files are numbered instead.
        for i, (name, a) in enumerate(inputs.items()):
            path = os.path.join(d, f"input_{i}.npy")
            np.save(path, a)
            cmd += ["--input", f"{name}={path}"]
        p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed")
    r = json.loads(p.stdout)
    out = {k: r[k] for k in ("median_ms", "min_ms", "max_ms", "iters")}
    # The one-time cost: reading the model plus compiling it (ONNX input).
    out["load_ms"] = r["load_ms"] + r.get("compile_ms", 0.0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model directories")
    ap.add_argument("--iters", type=int, default=10, help="timed runs per runtime (default 10)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    ap.add_argument("--backends", default="interp,jit", help="tessera backends (default interp,jit)")
    ap.add_argument("--tessera", default="target/release/tessera", help="the tessera executable")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not os.access(args.tessera, os.X_OK):
        sys.exit(f"{args.tessera} not found: run `cargo build --release` first or pass --tessera")

    results = {}
    for model_dir in args.models:
        inputs = load_inputs(model_dir)
        rows = {}
        runners = [(f"tessera {b}", lambda b=b: bench_tessera(
            args.tessera, model_dir, inputs, b, args.iters, args.warmup))
            for b in args.backends.split(",") if b]
        runners += [
            ("onnxruntime (1 thread)", lambda: bench_ort(model_dir, inputs, args.iters, args.warmup)),
            ("tract", lambda: bench_tract(model_dir, inputs, args.iters, args.warmup)),
        ]
        for name, run in runners:
            print(f"  {model_dir.name}: {name} ...", file=sys.stderr, flush=True)
            try:
                rows[name] = run()
            except Exception as e:  # a runtime that cannot run the model is reported, not fatal
                rows[name] = {"error": str(e).splitlines()[0][:200] if str(e) else type(e).__name__}
        results[model_dir.name] = rows
        ort_ms = rows.get("onnxruntime (1 thread)", {}).get("median_ms")
        print(f"\n{model_dir.name}")
        print(f"  {'runtime':<24} {'load ms':>10} {'median ms':>11} {'min ms':>10} {'vs ORT':>8}")
        for name, r in rows.items():
            if "error" in r:
                print(f"  {name:<24} error: {r['error']}")
                continue
            ratio = f"{r['median_ms'] / ort_ms:.2f}x" if ort_ms else "-"
            print(f"  {name:<24} {r['load_ms']:>10.1f} {r['median_ms']:>11.2f} "
                  f"{r['min_ms']:>10.2f} {ratio:>8}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
