"""Writes the custom-operator example: model.onnx, inputs/x.npy and expected/y.npy.

The model is MatMul -> com.example:FastRmsNorm -> Relu on an 8x64 f32 activation:

    h = x @ w                       (w: an initializer, 64x64)
    r = FastRmsNorm(h, gamma)       (a custom operator: h * rsqrt(mean(h^2, -1) + 1e-6) * gamma)
    y = relu(r)

onnxruntime cannot run the custom operator, so the expected output is this script's numpy
reference of the same formula, in float64 and rounded to float32 once.

Usage: python3 examples/custom_op/make_model.py   (from anywhere; needs onnx and numpy)
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
ROWS, COLS, EPS = 8, 64, 1e-6


def main() -> None:
    rng = np.random.default_rng(2026)
    w = (rng.standard_normal((COLS, COLS)) / np.sqrt(COLS)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, COLS).astype(np.float32)
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("FastRmsNorm", ["h", "gamma"], ["r"], name="norm", domain="com.example", epsilon=EPS),
        helper.make_node("Relu", ["r"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "custom_rms_norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, COLS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [ROWS, COLS])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(gamma, "gamma")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        producer_name="tessera examples/custom_op/make_model.py",
    )
    model.ir_version = 8
    onnx.save(model, HERE / "model.onnx")

    h = x.astype(np.float64) @ w.astype(np.float64)
    r = h / np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + EPS) * gamma.astype(np.float64)
    y = np.maximum(r, 0.0).astype(np.float32)
    (HERE / "inputs").mkdir(exist_ok=True)
    (HERE / "expected").mkdir(exist_ok=True)
    np.save(HERE / "inputs" / "x.npy", x)
    np.save(HERE / "expected" / "y.npy", y)


if __name__ == "__main__":
    main()
