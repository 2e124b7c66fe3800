#!/usr/bin/env python3
"""Build ONNX test models in code and record onnxruntime's outputs for them.

Every model is made with ``onnx.helper`` (nothing is downloaded) and checked with
``onnx.checker.check_model(..., full_check=True)``. Its inputs are seeded random float32 arrays
(one fixed seed per case, so every run writes the same bytes) and its expected outputs come
from onnxruntime's CPU provider, single-threaded, with graph optimisations disabled, so the
reference is the plain semantics of each op.

Layout written for a case ``<case>`` (the ONNX backend-test layout, plus ``.npy`` copies for the
tessera CLI; ``<name>`` is the graph tensor name with ``/`` and ``:`` replaced by ``_``)::

    OUT_DIR/<case>/model.onnx
    OUT_DIR/<case>/weights.bin                  (external_data only)
    OUT_DIR/<case>/test_data_set_0/input_<k>.pb  TensorProto, name = graph input name
    OUT_DIR/<case>/test_data_set_0/output_<k>.pb TensorProto, name = graph output name
    OUT_DIR/<case>/inputs/<name>.npy
    OUT_DIR/<case>/expected/<name>.npy
    OUT_DIR/errors/<case>/model.onnx            models an importer must reject (no data)

Each case folder is written to a temporary folder beside it and then renamed into place, so
a run that stops half-way never leaves a half-written case behind.

Usage::

    python3 scripts/make_test_models.py OUT_DIR [--only NAME ...] [--list]
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError as missing:
    sys.exit(
        f"error: make_test_models.py needs the Python package '{missing.name}', which is not "
        "installed.\nInstall the pinned test requirements with:\n"
        "    pip install -r scripts/requirements-test.txt"
    )

PRODUCER = "tessera scripts/make_test_models.py"
CUSTOM_DOMAIN = "com.example.tessera"


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """A model plus the arrays fed to its (non-initializer) graph inputs, in graph order."""

    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    external_data: bool = False


def seed_for(case_name: str) -> int:
    """A fixed seed per case; crc32 rather than hash() so it is the same in every process."""
    return zlib.crc32(case_name.encode())


def data(rng: np.random.Generator, shape, scale: float = 1.0) -> np.ndarray:
    """Activation-like data: N(0, scale^2), float32."""
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def weight(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """A weight N(0, 1/fan_in) (std 1/sqrt(fan_in)), so activations stay O(1) through a layer."""
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)


def scalar(value: float) -> np.ndarray:
    """A rank-0 float32 tensor, as exporters write the constants of an elementwise formula."""
    return np.array(value, dtype=np.float32)


def int64s(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def tensor_info(name: str, shape, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def make_case(
    name: str,
    opset: int,
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    outputs: dict[str, tuple],
    initializers: dict[str, np.ndarray] | None = None,
    extra_opsets: tuple[tuple[str, int], ...] = (),
) -> Case:
    """Assemble a model with the lowest IR version its opsets allow.

    ``inputs`` are the runtime inputs (float32 arrays); ``outputs`` maps each graph output to
    its declared shape; ``initializers`` become raw_data TensorProtos. Before IR version 4
    (opset < 9) every initializer must also be listed as a graph input, so it is.
    """
    initializers = initializers or {}
    opset_imports = [helper.make_opsetid("", opset)]
    opset_imports += [helper.make_opsetid(domain, version) for domain, version in extra_opsets]
    ir_version = helper.find_min_ir_version_for(opset_imports, ignore_unknown=True)

    graph_inputs = [
        tensor_info(n, a.shape, helper.np_dtype_to_tensor_dtype(a.dtype)) for n, a in inputs.items()
    ]
    if ir_version < 4:
        graph_inputs += [
            tensor_info(n, a.shape, helper.np_dtype_to_tensor_dtype(a.dtype))
            for n, a in initializers.items()
        ]
    graph = helper.make_graph(
        nodes,
        name,
        graph_inputs,
        [tensor_info(n, shape) for n, shape in outputs.items()],
        initializer=[numpy_helper.from_array(a, n) for n, a in initializers.items()],
    )
    model = helper.make_model(
        graph, opset_imports=opset_imports, ir_version=ir_version, producer_name=PRODUCER
    )
    return Case(model, inputs)


# --------------------------------------------------------------------------------------------
# Whole small networks
# --------------------------------------------------------------------------------------------


def case_mlp(rng: np.random.Generator) -> Case:
    """x[53,200] -> Gemm(W1,b1) -> Relu -> MatMul(W2) -> Add(b2) -> Softmax(-1). Opset 17."""
    inits = {
        "W1": weight(rng, (200, 77), 200),
        "b1": data(rng, (77,), 0.1),
        "W2": weight(rng, (77, 9), 77),
        "b2": data(rng, (9,), 0.1),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("MatMul", ["a1", "W2"], ["h2"], name="fc2_matmul"),
        helper.make_node("Add", ["h2", "b2"], ["logits"], name="fc2_bias"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    return make_case("mlp", 17, nodes, {"x": data(rng, (53, 200))}, {"y": (53, 9)}, inits)


def case_mlp_gemm_trans(rng: np.random.Generator) -> Case:
    """The mlp with Gemm's attributes exercised. Opset 13.

    Layer 1: Gemm(x, W1[77,200], b1[77], transB=1, alpha=0.5, beta=2.0), C broadcast over rows.
    Layer 2: the activation is transposed by a Transpose node, and Gemm(transA=1) undoes it.
    """
    inits = {
        "W1": weight(rng, (77, 200), 200),
        "b1": data(rng, (77,), 0.1),
        "W2": weight(rng, (77, 9), 77),
        "b2": data(rng, (9,), 0.1),
    }
    nodes = [
        helper.make_node(
            "Gemm", ["x", "W1", "b1"], ["h1"], name="fc1", transB=1, alpha=0.5, beta=2.0
        ),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Transpose", ["a1"], ["a1_t"], name="to_feature_major", perm=[1, 0]),
        helper.make_node("Gemm", ["a1_t", "W2", "b2"], ["logits"], name="fc2", transA=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    return make_case(
        "mlp_gemm_trans", 13, nodes, {"x": data(rng, (53, 200))}, {"y": (53, 9)}, inits
    )


def case_ffn(rng: np.random.Generator) -> Case:
    """A transformer feed-forward block with the tanh GELU spelled out in Mul/Add/Tanh. Opset 17.

    y = x + W2 @ gelu(W1 @ x + b1) + b2, gelu(h) = 0.5*h*(1 + tanh(sqrt(2/pi)*(h + 0.044715*h^3))).
    Tensor names are in the "scope/op:0" style of exporters, so the output file name is
    sanitized (expected/ffn_y_0.npy).
    """
    d_model, d_ff = 64, 256
    inits = {
        "ffn/fc1/weight": weight(rng, (d_model, d_ff), d_model),
        "ffn/fc1/bias": data(rng, (d_ff,), 0.1),
        "ffn/fc2/weight": weight(rng, (d_ff, d_model), d_ff),
        "ffn/fc2/bias": data(rng, (d_model,), 0.1),
        "ffn/gelu/half": scalar(0.5),
        "ffn/gelu/one": scalar(1.0),
        "ffn/gelu/cubic_coeff": scalar(0.044715),
        "ffn/gelu/sqrt_2_over_pi": scalar(math.sqrt(2.0 / math.pi)),
    }

    def node(op: str, ins: list[str], out: str) -> onnx.NodeProto:
        return helper.make_node(op, ins, [out + ":0"], name=out)

    h = "ffn/fc1/Add:0"
    nodes = [
        node("MatMul", ["x", "ffn/fc1/weight"], "ffn/fc1/MatMul"),
        node("Add", ["ffn/fc1/MatMul:0", "ffn/fc1/bias"], "ffn/fc1/Add"),
        node("Mul", [h, h], "ffn/gelu/Mul_sq"),
        node("Mul", ["ffn/gelu/Mul_sq:0", h], "ffn/gelu/Mul_cube"),
        node("Mul", ["ffn/gelu/Mul_cube:0", "ffn/gelu/cubic_coeff"], "ffn/gelu/Mul_coeff"),
        node("Add", [h, "ffn/gelu/Mul_coeff:0"], "ffn/gelu/Add_inner"),
        node("Mul", ["ffn/gelu/Add_inner:0", "ffn/gelu/sqrt_2_over_pi"], "ffn/gelu/Mul_scale"),
        node("Tanh", ["ffn/gelu/Mul_scale:0"], "ffn/gelu/Tanh"),
        node("Add", ["ffn/gelu/Tanh:0", "ffn/gelu/one"], "ffn/gelu/Add_one"),
        node("Mul", [h, "ffn/gelu/half"], "ffn/gelu/Mul_half"),
        node("Mul", ["ffn/gelu/Mul_half:0", "ffn/gelu/Add_one:0"], "ffn/gelu/Mul_out"),
        node("MatMul", ["ffn/gelu/Mul_out:0", "ffn/fc2/weight"], "ffn/fc2/MatMul"),
        node("Add", ["ffn/fc2/MatMul:0", "ffn/fc2/bias"], "ffn/fc2/Add"),
        node("Add", ["ffn/fc2/Add:0", "x"], "ffn/y"),
    ]
    x = data(rng, (2, 16, d_model))
    return make_case("ffn", 17, nodes, {"x": x}, {"ffn/y:0": (2, 16, d_model)}, inits)


def case_external_data(rng: np.random.Generator) -> Case:
    """The mlp model, saved with every initializer in weights.bin beside model.onnx.

    Seeded like ``mlp``, so its inputs and expected outputs are the same as mlp's.
    """
    case = case_mlp(np.random.default_rng(seed_for("mlp")))
    case.model.graph.name = "external_data"
    case.external_data = True
    return case


# --------------------------------------------------------------------------------------------
# Single-op cases (the first op set), at the opsets where the op's meaning or signature changed
# --------------------------------------------------------------------------------------------


def single_op(
    name: str,
    opset: int,
    op: str,
    inputs: dict[str, np.ndarray],
    out_shape: tuple,
    initializers: dict[str, np.ndarray] | None = None,
    input_order: list[str] | None = None,
    **attrs,
) -> Case:
    """One node ``y = op(inputs..., initializers...)``; the node's inputs are in ``input_order``
    (default: runtime inputs, then initializers)."""
    initializers = initializers or {}
    order = input_order or [*inputs, *initializers]
    nodes = [helper.make_node(op, order, ["y"], name=op.lower(), **attrs)]
    return make_case(name, opset, nodes, inputs, {"y": out_shape}, initializers)


def op_softmax(rng, name: str, opset: int, axis: int | None) -> Case:
    """Softmax on [3,4,5]. Opset 11 flattens to 2-D at ``axis`` (default 1) and normalises over
    everything after it; opset 13 normalises over ``axis`` alone (default -1)."""
    attrs = {} if axis is None else {"axis": axis}
    return single_op(name, opset, "Softmax", {"x": data(rng, (3, 4, 5), 2.0)}, (3, 4, 5), **attrs)


def op_reshape(rng, name: str, opset: int) -> Case:
    """Reshape [2,3,4,5] by the shape initializer [0,-1,5]: 0 copies dim 0, -1 is inferred (12).
    Opset 5 is the first with the shape as an input (and IR 3, so the initializer is also a
    graph input); opset 14 adds ``allowzero``, given here as 0 explicitly."""
    attrs = {"allowzero": 0} if opset >= 14 else {}
    return single_op(
        name, opset, "Reshape", {"x": data(rng, (2, 3, 4, 5))}, (2, 12, 5),
        {"shape": int64s(0, -1, 5)}, **attrs,
    )  # fmt: skip


def op_flatten(rng, name: str, opset: int, axis: int) -> Case:
    """Flatten [2,3,4,5] at ``axis``; negative axes are allowed from opset 11."""
    dims = (2, 3, 4, 5)
    split = axis % len(dims) if axis < 0 else axis
    out = (math.prod(dims[:split]), math.prod(dims[split:]))
    return single_op(name, opset, "Flatten", {"x": data(rng, dims)}, out, axis=axis)


def op_transpose(rng, name: str, opset: int, perm: list[int] | None) -> Case:
    """Transpose [2,3,4,5]; without ``perm`` the axes are reversed."""
    dims = (2, 3, 4, 5)
    order = perm if perm is not None else list(reversed(range(len(dims))))
    attrs = {} if perm is None else {"perm": perm}
    out = tuple(dims[i] for i in order)
    return single_op(name, opset, "Transpose", {"x": data(rng, dims)}, out, **attrs)


def op_matmul(rng, name: str, opset: int, a_shape: tuple, b_shape: tuple, out: tuple) -> Case:
    """MatMul with numpy semantics: batch dims broadcast, 1-D operands promoted then squeezed.
    B is scaled by 1/sqrt(K) like a weight."""
    k = a_shape[-1]
    inputs = {"a": data(rng, a_shape), "b": weight(rng, b_shape, k)}
    return single_op(name, opset, "MatMul", inputs, out)


def op_gemm(
    rng, name: str, opset: int, trans_a: int, trans_b: int, c_shape: tuple | None,
    alpha: float = 1.0, beta: float = 1.0,
) -> Case:  # fmt: skip
    """Gemm of M=6, K=5, N=4 with A, B (and C) as runtime inputs. C became optional at opset 11;
    at opset 7 it is required and broadcasts unidirectionally to [M,N]."""
    m, k, n = 6, 5, 4
    inputs = {
        "a": data(rng, (k, m) if trans_a else (m, k)),
        "b": weight(rng, (n, k) if trans_b else (k, n), k),
    }
    if c_shape is not None:
        inputs["c"] = data(rng, c_shape)
    attrs = {}
    if trans_a:
        attrs["transA"] = 1
    if trans_b:
        attrs["transB"] = 1
    if alpha != 1.0:
        attrs["alpha"] = alpha
    if beta != 1.0:
        attrs["beta"] = beta
    return single_op(name, opset, "Gemm", inputs, (m, n), **attrs)


def op_binary(rng, name: str, opset: int, op: str) -> Case:
    """``op`` on [4,1,6] and [5,1], broadcasting to [4,5,6] (multidirectional since opset 7).
    Div's divisor is kept away from zero: |b| >= 0.5."""
    a = data(rng, (4, 1, 6))
    b = data(rng, (5, 1))
    if op == "Div":
        b = (np.sign(b) * (0.5 + np.abs(b))).astype(np.float32)
    return single_op(name, opset, op, {"a": a, "b": b}, (4, 5, 6))


def op_unary(rng, name: str, opset: int, op: str) -> Case:
    """Elementwise ``op`` on [3,7,11]; scale 3 so Sigmoid and Tanh reach their flat tails."""
    return single_op(name, opset, op, {"x": data(rng, (3, 7, 11), 3.0)}, (3, 7, 11))


def op_constant_add(rng, name: str, opset: int) -> Case:
    """y = x + Constant(value=<[2,3] tensor>). The ``value`` attribute exists at every opset."""
    value = data(rng, (2, 3))
    nodes = [
        helper.make_node(
            "Constant", [], ["k"], name="constant", value=numpy_helper.from_array(value, "k")
        ),
        helper.make_node("Add", ["x", "k"], ["y"], name="add"),
    ]
    return make_case(name, opset, nodes, {"x": data(rng, (2, 3))}, {"y": (2, 3)})


# --------------------------------------------------------------------------------------------
# Shape computations the importer must fold at compile time
# --------------------------------------------------------------------------------------------


def case_shape_gather_concat_reshape(rng: np.random.Generator) -> Case:
    """The "flatten all but the batch dim" pattern of exporters. Opset 13.

    new_shape = Concat(Unsqueeze(Gather(Shape(x), 0), [0]), Constant([-1])) = [6, -1];
    y = Reshape(x[6,4,5], new_shape) -> [6,20]. The Gather index is an initializer and the
    [-1] a Constant node, so both kinds of constant have to be folded.
    """
    inits = {"dim0_index": np.array(0, dtype=np.int64), "unsqueeze_axes": int64s(0)}
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Gather", ["x_shape", "dim0_index"], ["batch"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["batch", "unsqueeze_axes"], ["batch_1d"], name="unsqueeze"),
        helper.make_node(
            "Constant", [], ["minus_one"], name="constant",
            value=numpy_helper.from_array(int64s(-1), "minus_one"),
        ),  # fmt: skip
        helper.make_node("Concat", ["batch_1d", "minus_one"], ["new_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "new_shape"], ["y"], name="reshape"),
    ]
    return make_case(
        "shape_gather_concat_reshape", 13, nodes, {"x": data(rng, (6, 4, 5))}, {"y": (6, 20)},
        inits,
    )  # fmt: skip


def case_shape_constantofshape_range(rng: np.random.Generator) -> Case:
    """Tensors made from a shape at compile time. Opset 13.

    n = Gather(Shape(x), 1); ramp = Cast<float>(Range(0, n, 1)) = [0..6];
    fill = ConstantOfShape(Shape(x), value=1.5); y = (x + ramp) * fill, x: [4,7].
    """
    inits = {
        "dim1_index": np.array(1, dtype=np.int64),
        "range_start": np.array(0, dtype=np.int64),
        "range_delta": np.array(1, dtype=np.int64),
    }
    fill = numpy_helper.from_array(np.array([1.5], dtype=np.float32), "fill_value")
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Gather", ["x_shape", "dim1_index"], ["n"], name="gather", axis=0),
        helper.make_node("Range", ["range_start", "n", "range_delta"], ["ramp_i64"], name="range"),
        helper.make_node("Cast", ["ramp_i64"], ["ramp"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("ConstantOfShape", ["x_shape"], ["fill"], name="fill", value=fill),
        helper.make_node("Add", ["x", "ramp"], ["shifted"], name="add"),
        helper.make_node("Mul", ["shifted", "fill"], ["y"], name="mul"),
    ]
    return make_case(
        "shape_constantofshape_range", 13, nodes, {"x": data(rng, (4, 7))}, {"y": (4, 7)}, inits
    )


# --------------------------------------------------------------------------------------------
# Models an importer must reject (written without test data)
# --------------------------------------------------------------------------------------------


def error_unknown_op() -> onnx.ModelProto:
    """Two ops tessera does not support: FooBar from a custom domain, then ONNX's Det.
    An importer should name both nodes. The model itself is valid ONNX."""
    nodes = [
        helper.make_node("FooBar", ["x"], ["t"], name="foobar", domain=CUSTOM_DOMAIN),
        helper.make_node("Det", ["t"], ["y"], name="det"),
    ]
    inputs = {"x": np.zeros((3, 3), np.float32)}
    case = make_case("unknown_op", 17, nodes, inputs, {"y": ()}, extra_opsets=((CUSTOM_DOMAIN, 1),))
    # The checker skips ops of domains it does not know, so this passes: only tessera rejects it.
    onnx.checker.check_model(case.model, full_check=True)
    return case.model


def error_shape_mismatch() -> onnx.ModelProto:
    """DELIBERATELY INVALID: MatMul of a[3,4] by b[5,6]; the inner dimensions 4 and 5 differ.

    Built with helper.make_model and never given to the checker (whose shape inference would
    reject it): the point is that tessera's importer reports the mismatch itself.
    """
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"], name="matmul")],
        "shape_mismatch",
        [tensor_info("a", (3, 4)), tensor_info("b", (5, 6))],
        [tensor_info("y", (3, 6))],
    )
    opsets = [helper.make_opsetid("", 13)]
    return helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
        producer_name=PRODUCER,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The case list
# --------------------------------------------------------------------------------------------

CaseBuilder = Callable[[np.random.Generator], Case]
CASES: dict[str, CaseBuilder] = {}


def register(name: str, builder: Callable[..., Case], **params) -> None:
    """Add a case; parameterised builders get the case name so the model graph is named too."""
    if name in CASES:
        raise ValueError(f"duplicate case name {name}")
    CASES[name] = functools.partial(builder, name=name, **params) if params else builder


def register_all() -> None:
    register("mlp", case_mlp)
    register("mlp_gemm_trans", case_mlp_gemm_trans)
    register("ffn", case_ffn)
    register("external_data", case_external_data)

    for opset in (11, 13):
        register(f"op_softmax_axis1_opset{opset}", op_softmax, opset=opset, axis=1)
        register(f"op_softmax_default_axis_opset{opset}", op_softmax, opset=opset, axis=None)
    register("op_softmax_axis_neg1_opset13", op_softmax, opset=13, axis=-1)

    for opset in (5, 14):
        register(f"op_reshape_zero_minus1_opset{opset}", op_reshape, opset=opset)

    for axis in (0, 1, 2):
        register(f"op_flatten_axis{axis}_opset13", op_flatten, opset=13, axis=axis)
    register("op_flatten_axis2_opset9", op_flatten, opset=9, axis=2)
    register("op_flatten_axis_neg1_opset11", op_flatten, opset=11, axis=-1)

    for opset in (13, 21):
        register(f"op_transpose_default_perm_opset{opset}", op_transpose, opset=opset, perm=None)
        register(f"op_transpose_perm_opset{opset}", op_transpose, opset=opset, perm=[0, 2, 3, 1])

    matmuls = {
        "op_matmul_2d": ((6, 7), (7, 4), (6, 4)),
        "op_matmul_batched_broadcast": ((2, 1, 5, 7), (3, 7, 4), (2, 3, 5, 4)),
        "op_matmul_1d_2d": ((7,), (7, 4), (4,)),
        "op_matmul_2d_1d": ((6, 7), (7,), (6,)),
    }
    for name, (a, b, out) in matmuls.items():
        register(name, op_matmul, opset=13, a_shape=a, b_shape=b, out=out)
    register("op_matmul_batched_broadcast_opset9", op_matmul, opset=9,
             a_shape=(2, 1, 5, 7), b_shape=(3, 7, 4), out=(2, 3, 5, 4))  # fmt: skip

    register("op_gemm_no_c_opset11", op_gemm, opset=11, trans_a=0, trans_b=0, c_shape=None)
    register("op_gemm_no_c_transab_opset13", op_gemm, opset=13, trans_a=1, trans_b=1, c_shape=None)
    register("op_gemm_c_row_opset13", op_gemm, opset=13, trans_a=0, trans_b=0, c_shape=(4,))
    register("op_gemm_c_col_transa_opset13", op_gemm, opset=13, trans_a=1, trans_b=0,
             c_shape=(6, 1))  # fmt: skip
    register("op_gemm_c_full_transb_alpha_beta_opset13", op_gemm, opset=13, trans_a=0,
             trans_b=1, c_shape=(6, 4), alpha=0.7, beta=-1.3)  # fmt: skip
    register("op_gemm_c_scalar_transab_opset7", op_gemm, opset=7, trans_a=1, trans_b=1,
             c_shape=(1,), alpha=2.0, beta=0.5)  # fmt: skip

    for op in ("Add", "Sub", "Mul", "Div"):
        for opset in (7, 14):
            register(f"op_{op.lower()}_broadcast_opset{opset}", op_binary, opset=opset, op=op)

    unary_opsets = {"Relu": (6, 14), "Sigmoid": (6, 13), "Tanh": (6, 13), "Identity": (1, 21)}
    for op, opsets in unary_opsets.items():
        for opset in opsets:
            register(f"op_{op.lower()}_opset{opset}", op_unary, opset=opset, op=op)

    for opset in (9, 13):
        register(f"op_constant_add_opset{opset}", op_constant_add, opset=opset)

    register("shape_gather_concat_reshape", case_shape_gather_concat_reshape)
    register("shape_constantofshape_range", case_shape_constantofshape_range)


ERROR_CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "unknown_op": error_unknown_op,
    "shape_mismatch": error_shape_mismatch,
}


# --------------------------------------------------------------------------------------------
# Running onnxruntime and writing the files
# --------------------------------------------------------------------------------------------


def file_stem(tensor_name: str) -> str:
    """The .npy file name for a graph tensor: '/' and ':' become '_'."""
    return tensor_name.replace("/", "_").replace(":", "_")


def run_reference(model_path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of onnxruntime's CPU provider, one thread, no graph rewrites, in graph order."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; IR 3 models warn about initializer inputs
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def save_model(model: onnx.ModelProto, path: Path, external_data: bool) -> None:
    if not external_data:
        onnx.save_model(model, path)
        return
    # save_model moves the initializers out of the proto it is given, so hand it a copy.
    onnx.save_model(
        copy.deepcopy(model), path, save_as_external_data=True, all_tensors_to_one_file=True,
        location="weights.bin", size_threshold=0,
    )  # fmt: skip


def write_tensor_files(folder: Path, index: int, kind: str, name: str, array: np.ndarray) -> None:
    """``test_data_set_0/<kind>_<index>.pb`` and ``<inputs|expected>/<name>.npy``."""
    pb = numpy_helper.from_array(array, name)
    (folder / "test_data_set_0" / f"{kind}_{index}.pb").write_bytes(pb.SerializeToString())
    npy_dir = folder / ("inputs" if kind == "input" else "expected")
    np.save(npy_dir / f"{file_stem(name)}.npy", array)


def check_outputs(name: str, model: onnx.ModelProto, outputs: dict[str, np.ndarray]) -> None:
    """The reference must match the declared output shapes and be finite."""
    for info in model.graph.output:
        declared = tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
        got = outputs[info.name]
        if got.shape != declared or got.dtype != np.float32:
            raise RuntimeError(
                f"{name}: output {info.name} is {got.dtype}{list(got.shape)}, "
                f"declared float32{list(declared)}"
            )
        if not np.all(np.isfinite(got)):
            raise RuntimeError(f"{name}: output {info.name} has non-finite values")


def replace_dir(new: Path, dest: Path) -> None:
    """Put the finished folder ``new`` at ``dest``, moving any old one aside first."""
    # mkdtemp makes a private 0700 folder and onnx writes external data 0600; publish 755/644.
    new.chmod(0o755)
    for path in new.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
        os.rename(new, dest)
        shutil.rmtree(old)
    else:
        os.rename(new, dest)


def write_case(out_dir: Path, name: str, case: Case) -> str:
    """Check, save and run one case; returns a one-line summary."""
    onnx.checker.check_model(case.model, full_check=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out_dir))
    try:
        model_path = tmp / "model.onnx"
        save_model(case.model, model_path, case.external_data)
        if case.external_data:
            onnx.checker.check_model(str(model_path), full_check=True)

        expected = run_reference(model_path, case.inputs)
        check_outputs(name, case.model, expected)

        for sub in ("test_data_set_0", "inputs", "expected"):
            (tmp / sub).mkdir()
        for k, (tensor, array) in enumerate(case.inputs.items()):
            write_tensor_files(tmp, k, "input", tensor, array)
        for k, (tensor, array) in enumerate(expected.items()):
            write_tensor_files(tmp, k, "output", tensor, array)
        replace_dir(tmp, out_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    opset = next(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
    shapes = lambda arrays: ", ".join(f"{n}{list(a.shape)}" for n, a in arrays.items())  # noqa: E731
    extra = " (weights in weights.bin)" if case.external_data else ""
    return (
        f"{name}: opset {opset}, ir {case.model.ir_version}, "
        f"{shapes(case.inputs)} -> {shapes(expected)}{extra}"
    )


def write_error_case(errors_dir: Path, name: str, model: onnx.ModelProto) -> str:
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=errors_dir))
    try:
        onnx.save_model(model, tmp / "model.onnx")
        replace_dir(tmp, errors_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return f"errors/{name}: model only ({len(model.graph.node)} nodes)"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build ONNX test models and their onnxruntime reference outputs.",
        epilog="Needs: pip install -r scripts/requirements-test.txt",
    )
    parser.add_argument("out_dir", type=Path, nargs="?", help="folder to write the cases into")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME",
        help="write only these cases (error cases may be given as NAME or errors/NAME)",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    args = parser.parse_args(argv)
    if not args.list and args.out_dir is None:
        parser.error("OUT_DIR is required (or use --list)")
    return args


def main(argv: list[str]) -> int:
    register_all()
    args = parse_args(argv)
    all_names = [*CASES, *(f"errors/{n}" for n in ERROR_CASES)]
    if args.list:
        print("\n".join(all_names))
        return 0

    wanted = set(all_names)
    if args.only:
        wanted = set()
        for requested in args.only:
            name = f"errors/{requested}" if requested in ERROR_CASES else requested
            if name not in all_names:
                print(f"error: no case named '{requested}' (see --list)", file=sys.stderr)
                return 2
            wanted.add(name)

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    written = 0
    for name, build in CASES.items():
        if name in wanted:
            print(write_case(out_dir, name, build(np.random.default_rng(seed_for(name)))))
            written += 1
    for name, build in ERROR_CASES.items():
        if f"errors/{name}" in wanted:
            (out_dir / "errors").mkdir(exist_ok=True)
            print(write_error_case(out_dir / "errors", name, build()))
            written += 1
    elapsed = time.perf_counter() - start
    print(f"wrote {written} case(s) to {out_dir} in {elapsed:.1f} s "
          f"(onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
