#!/usr/bin/env python3
"""Build the "real model" test cases: nine ImageNet CNNs and two transformer blocks.

The CNNs are the architectures the pip ``onnx`` package ships in
``onnx/backend/test/data/light`` (AlexNet, DenseNet-121, Inception v1 and v2, ResNet-50,
ShuffleNet, SqueezeNet, VGG-19, ZFNet-512). Those files keep the graph but replace almost every
weight by a ``ConstantOfShape`` node filling it with 0.02, which makes useless test data. Here
every float parameter is replaced by a seeded random initializer of a sensible scale, chosen
from how the graph uses it, so activations stay O(1) through the network:

* Conv / Gemm weights: He normal, std sqrt(2 / fan_in) (fan_in = input channels per group x
  kernel area, or the Gemm's K);
* Conv / Gemm biases and BatchNormalization bias and mean: N(0, 0.1^2) (biases 0.05);
* BatchNormalization scale U(0.8, 1.2) and variance U(0.75, 1.25) (always positive), except
  the last BN of a residual branch (its output goes into a Sum), whose scale is U(0.2, 0.4):
  with scale ~1 every ResNet/ShuffleNet block would double the residual stream;
* per-channel Mul (a Caffe ``Scale`` layer after BN, via Unsqueeze) U(0.8, 1.2), per-channel Add
  N(0, 0.1^2);
* then the classifier (the last Conv/Gemm) is rescaled, from one onnxruntime run, so the
  logits have RMS 3: a confident softmax that still depends on every logit.

The few small float initializers the light files kept (trained BN statistics and biases) are
regenerated the same way: trained statistics next to random convolutions would shrink or blow
up activations by orders of magnitude. Integer initializers (Reshape targets) are kept,
ConstantOfShape nodes and their shape inputs are removed, unused initializers dropped, and the
model is saved at the IR version its opset needs (initializers no longer listed as inputs).
The input of the final Softmax becomes an extra graph output named ``logits`` (DenseNet-121's
light graph ends at its classifier Conv, without a Softmax: its only output is the logits).

The transformer cases are built with ``onnx.helper``:

* ``bert_encoder_layer`` (opset 13): batch 2, sequence 64, hidden 256, 4 heads, FFN 1024;
  post-LN BERT layer with LayerNorm written out (ReduceMean, Sub, Pow, Add, Sqrt, Div, Mul,
  Add), GELU as 0.5 x (1 + erf(x / sqrt 2)), and an int64 ``attention_mask`` [B, S] input
  turned into an additive -10000 mask in the graph (the second sequence is padded).
* ``gpt_decoder_2block`` (opset 17): batch 2, sequence 64, hidden 256, 4 heads, FFN 1024;
  int64 ``input_ids`` [B, S] looked up in a token embedding table (Gather with run-time
  indices), learned position embeddings added, two pre-LN decoder blocks with LayerNormalization, a constant
  causal mask added to the attention scores, GELU in its tanh form (Pow, Mul, Add, Tanh), a
  final LayerNormalization and an LM head; outputs the logits [B, S, 512].

Inputs are seeded (batch 1 images N(0, 1) for the CNNs), expected outputs come from
onnxruntime's CPU provider with one thread and graph optimisations off. Layout per case, as the
ONNX backend tests (``tessera onnx-test OUT_DIR`` runs them)::

    OUT_DIR/<case>/model.onnx
    OUT_DIR/<case>/test_data_set_0/input_<k>.pb, output_<k>.pb   TensorProto, named
    OUT_DIR/<case>/tolerance.json   {"rtol": 1e-3, "atol": 0, "atol_scale": 1e-4}

``atol_scale`` makes the absolute tolerance of each output 1e-4 x max |expected| of that
output: an element passes when |got - want| <= 1e-4 max|want| + 1e-3 |want|.

Every run writes the same bytes. Usage::

    python3 scripts/make_real_models.py OUT_DIR [--only NAME ...] [--list]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper, shape_inference
except ImportError as missing:
    sys.exit(
        f"error: make_real_models.py needs the Python package '{missing.name}', which is not "
        "installed.\nInstall the pinned test requirements with:\n"
        "    pip install -r scripts/requirements-test.txt"
    )

PRODUCER = "tessera scripts/make_real_models.py"
TOLERANCE = {"rtol": 1e-3, "atol": 0.0, "atol_scale": 1e-4}

# case name -> file name in onnx/backend/test/data/light
LIGHT_MODELS = {
    "alexnet": "light_bvlc_alexnet.onnx",
    "densenet121": "light_densenet121.onnx",
    "inception_v1": "light_inception_v1.onnx",
    "inception_v2": "light_inception_v2.onnx",
    "resnet50": "light_resnet50.onnx",
    "shufflenet": "light_shufflenet.onnx",
    "squeezenet": "light_squeezenet.onnx",
    "vgg19": "light_vgg19.onnx",
    "zfnet512": "light_zfnet512.onnx",
}


@dataclass
class Case:
    """A model plus the arrays fed to its graph inputs, in graph order."""

    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]


def seed_for(case_name: str) -> int:
    """A fixed seed per case; crc32 rather than hash() so it is the same in every process."""
    return zlib.crc32(case_name.encode())


def light_dir() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


# --------------------------------------------------------------------------------------------
# The light CNNs with real weights
# --------------------------------------------------------------------------------------------


def consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, k))
    return uses


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def param_role(name: str, uses) -> tuple[str, onnx.NodeProto]:
    """How a parameter is used: (op_type.input_index, node), looking through the Unsqueeze or
    Reshape a Caffe2 export puts between a per-channel parameter and its Mul/Add/Gemm."""
    seen = uses.get(name, [])
    if len(seen) != 1:
        raise RuntimeError(f"parameter {name} has {len(seen)} consumers, expected 1")
    node, k = seen[0]
    if node.op_type in ("Unsqueeze", "Reshape") and k == 0:
        return param_role(node.output[0], uses)
    return f"{node.op_type}.{k}", node


def normal(rng: np.random.Generator, std: float, shape) -> np.ndarray:
    """N(0, std^2) float32, drawn in float32 (VGG-19 has 144M weights)."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def feeds_residual_sum(node: onnx.NodeProto, uses) -> bool:
    after = uses.get(node.output[0], [])
    return any(c.op_type in ("Sum", "Add") and len(c.input) >= 2 for c, _ in after)


def random_param(rng: np.random.Generator, name: str, shape: tuple[int, ...], uses) -> np.ndarray:
    role, node = param_role(name, uses)
    if role == "Conv.1":
        fan_in = int(np.prod(shape[1:]))
        return normal(rng, math.sqrt(2.0 / fan_in), shape)
    if role == "Gemm.1":
        # K is the last dim with transB (Inception v1 reshapes a [1, 1, N, K] weight)
        fan_in = shape[-1] if attr(node, "transB", 0) else shape[0]
        return normal(rng, math.sqrt(2.0 / fan_in), shape)
    if role in ("Conv.2", "Gemm.2"):
        return normal(rng, 0.05, shape)
    if role == "BatchNormalization.1" and feeds_residual_sum(node, uses):
        # The last BN of a residual branch starts small, as in "zero-init gamma" training:
        # with gamma ~1 every block would double the residual stream's magnitude.
        return rng.uniform(0.2, 0.4, shape)
    if role in ("BatchNormalization.1", "Mul.1", "Mul.0"):
        return rng.uniform(0.8, 1.2, shape)
    if role in ("BatchNormalization.2", "BatchNormalization.3", "Add.1", "Add.0"):
        return normal(rng, 0.1, shape)
    if role == "BatchNormalization.4":
        return rng.uniform(0.75, 1.25, shape)
    raise RuntimeError(f"parameter {name}: no weight rule for its use as {role}")


def real_cnn(case_name: str, rng: np.random.Generator) -> Case:
    src = onnx.load(str(light_dir() / LIGHT_MODELS[case_name]))
    graph = src.graph
    inits = {t.name: t for t in graph.initializer}
    uses = consumers(graph)

    # Every float parameter with its shape: ConstantOfShape outputs and float initializers.
    shapes: dict[str, tuple[int, ...]] = {}
    nodes = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape":
            dims = numpy_helper.to_array(inits[node.input[0]])
            shapes[node.output[0]] = tuple(int(d) for d in dims)
        else:
            nodes.append(node)
    live = {i for n in nodes for i in n.input}
    kept_inits = []
    for t in graph.initializer:
        if t.name not in live:
            continue  # ConstantOfShape's shape inputs (now unused) and dead initializers
        if t.data_type == TensorProto.FLOAT:
            shapes[t.name] = tuple(t.dims)
        else:
            kept_inits.append(t)
    params = {
        n: random_param(rng, n, s, uses).astype(np.float32, copy=False)
        for n, s in sorted(shapes.items())
    }

    # Expose the input of the Softmax that makes the graph output as `logits`.
    outputs = list(graph.output)
    output_names = {o.name for o in outputs}
    final = [n for n in nodes if n.op_type == "Softmax" and n.output[0] in output_names]
    if final:
        old = final[0].input[0]
        for n in nodes:
            for k, name in enumerate(n.input):
                if name == old:
                    n.input[k] = "logits"
            for k, name in enumerate(n.output):
                if name == old:
                    n.output[k] = "logits"

    inputs = [i for i in graph.input if i.name not in inits and i.name in live]
    opsets = list(src.opset_import)
    new_graph = helper.make_graph(nodes, case_name, inputs, outputs, initializer=kept_inits)
    new_graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in params.items())
    model = helper.make_model(
        new_graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets, ignore_unknown=True),
        producer_name=PRODUCER,
    )
    if final:
        inferred = infer_shapes_without_weights(model)
        info = next(v for v in inferred.graph.value_info if v.name == "logits")
        model.graph.output.append(info)

    data = {}
    for i in inputs:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        data[i.name] = rng.standard_normal(shape).astype(np.float32)
    scale_classifier(model, data)
    return Case(model, data)


def scale_classifier(model: onnx.ModelProto, data: dict[str, np.ndarray],
                     target_rms: float = 3.0) -> None:  # fmt: skip
    """Scale the last Conv/Gemm (weight and bias) so the logits have RMS `target_rms`.

    He initialisation keeps activations O(1) but not exactly 1, and a drift of a few times
    makes the softmax one-hot (ShuffleNet's logits would have RMS ~30). Everything after the
    classifier (Relu, pooling) is positively homogeneous, so one onnxruntime run and one
    rescale set the logits' RMS exactly: a confident softmax that still depends on every logit.
    """
    logits = model.graph.output[-1].name
    classifier = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")][-1]
    got = run_reference(model.SerializeToString(), data, [logits])[logits].astype(np.float64)
    factor = target_rms / float(np.sqrt(np.mean(np.square(got))))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    for name in classifier.input[1:]:
        while name not in inits:  # a weight reshaped on the way (Inception v1)
            name = producers[name].input[0]
        scaled = (numpy_helper.to_array(inits[name]) * factor).astype(np.float32)
        inits[name].CopyFrom(numpy_helper.from_array(scaled, name))


# --------------------------------------------------------------------------------------------
# Transformer blocks built with onnx.helper
# --------------------------------------------------------------------------------------------


class Builder:
    """Collects nodes and initializers; names tensors `<prefix>/<what>`."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.count = 0

    def const(self, name: str, value) -> str:
        arr = np.asarray(value)
        self.inits[name] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
        return name

    def weight(self, name: str, shape, std: float) -> str:
        return self.const(name, self.rng.normal(0.0, std, shape))

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def linear(self, x: str, prefix: str, d_in: int, d_out: int) -> str:
        w = self.weight(f"{prefix}/weight", (d_in, d_out), 1.0 / math.sqrt(d_in))
        b = self.weight(f"{prefix}/bias", (d_out,), 0.05)
        return self.op("Add", [self.op("MatMul", [x, w], f"{prefix}/matmul"), b], f"{prefix}/out")

    def ln_params(self, prefix: str, d: int) -> tuple[str, str]:
        gamma = self.const(f"{prefix}/gamma", self.rng.uniform(0.8, 1.2, (d,)))
        beta = self.weight(f"{prefix}/beta", (d,), 0.1)
        return gamma, beta

    def attention(self, x: str, prefix: str, batch: int, seq: int, hidden: int, heads: int,
                  mask: str) -> str:  # fmt: skip
        dh = hidden // heads
        split = self.const(f"{prefix}/split_shape", np.array([batch, seq, heads, dh], np.int64))
        merge = self.const(f"{prefix}/merge_shape", np.array([batch, seq, hidden], np.int64))

        def heads_of(which: str, perm: list[int]) -> str:
            y = self.linear(x, f"{prefix}/{which}", hidden, hidden)
            y = self.op("Reshape", [y, split], f"{prefix}/{which}/split")
            return self.op("Transpose", [y], f"{prefix}/{which}/heads", perm=perm)

        q = heads_of("query", [0, 2, 1, 3])  # [B, h, S, dh]
        k = heads_of("key", [0, 2, 3, 1])  # [B, h, dh, S]
        v = heads_of("value", [0, 2, 1, 3])
        scores = self.op("MatMul", [q, k], f"{prefix}/scores")
        scale = self.const(f"{prefix}/sqrt_dh", np.array(math.sqrt(dh), np.float32))
        scores = self.op("Div", [scores, scale], f"{prefix}/scaled")
        scores = self.op("Add", [scores, mask], f"{prefix}/masked")
        probs = self.op("Softmax", [scores], f"{prefix}/probs", axis=-1)
        ctx = self.op("MatMul", [probs, v], f"{prefix}/context")
        ctx = self.op("Transpose", [ctx], f"{prefix}/context/t", perm=[0, 2, 1, 3])
        ctx = self.op("Reshape", [ctx, merge], f"{prefix}/context/merged")
        return self.linear(ctx, f"{prefix}/output", hidden, hidden)


def layer_norm_written_out(b: Builder, x: str, prefix: str, d: int) -> str:
    """BERT's LayerNorm as exported from TF/older PyTorch: the statistics op by op."""
    gamma, beta = b.ln_params(prefix, d)
    mean = b.op("ReduceMean", [x], f"{prefix}/mean", axes=[-1], keepdims=1)
    centred = b.op("Sub", [x, mean], f"{prefix}/centred")
    two = b.const(f"{prefix}/two", np.array(2.0, np.float32))
    var = b.op("ReduceMean", [b.op("Pow", [centred, two], f"{prefix}/sq")], f"{prefix}/var",
               axes=[-1], keepdims=1)  # fmt: skip
    eps = b.const(f"{prefix}/eps", np.array(1e-12, np.float32))
    std = b.op("Sqrt", [b.op("Add", [var, eps], f"{prefix}/var_eps")], f"{prefix}/std")
    normed = b.op("Div", [centred, std], f"{prefix}/normed")
    return b.op("Add", [b.op("Mul", [normed, gamma], f"{prefix}/scaled"), beta], f"{prefix}/out")


def gelu_erf(b: Builder, x: str, prefix: str) -> str:
    """0.5 x (1 + erf(x / sqrt 2))."""
    sqrt2 = b.const(f"{prefix}/sqrt2", np.array(math.sqrt(2.0), np.float32))
    one = b.const(f"{prefix}/one", np.array(1.0, np.float32))
    half = b.const(f"{prefix}/half", np.array(0.5, np.float32))
    erf = b.op("Erf", [b.op("Div", [x, sqrt2], f"{prefix}/div")], f"{prefix}/erf")
    y = b.op("Mul", [x, b.op("Add", [erf, one], f"{prefix}/erf_plus_1")], f"{prefix}/x_times")
    return b.op("Mul", [y, half], f"{prefix}/out")


def gelu_tanh(b: Builder, x: str, prefix: str) -> str:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as GPT-2 exports it."""
    three = b.const(f"{prefix}/three", np.array(3.0, np.float32))
    c = b.const(f"{prefix}/c", np.array(0.044715, np.float32))
    k = b.const(f"{prefix}/sqrt_2_over_pi", np.array(math.sqrt(2.0 / math.pi), np.float32))
    one = b.const(f"{prefix}/one", np.array(1.0, np.float32))
    half = b.const(f"{prefix}/half", np.array(0.5, np.float32))
    cube = b.op("Mul", [b.op("Pow", [x, three], f"{prefix}/cube"), c], f"{prefix}/cube_c")
    inner = b.op("Mul", [b.op("Add", [x, cube], f"{prefix}/inner"), k], f"{prefix}/inner_k")
    t = b.op("Add", [b.op("Tanh", [inner], f"{prefix}/tanh"), one], f"{prefix}/tanh_plus_1")
    return b.op("Mul", [b.op("Mul", [x, half], f"{prefix}/half_x"), t], f"{prefix}/out")


def bert_encoder_layer(rng: np.random.Generator) -> Case:
    batch, seq, hidden, heads, ffn = 2, 64, 256, 4, 1024
    b = Builder(rng)
    # attention_mask [B, S] (1 keep, 0 pad) -> (1 - mask) * -10000 as [B, 1, 1, S]
    m = b.op("Cast", ["attention_mask"], "mask/float", to=TensorProto.FLOAT)
    one = b.const("mask/one", np.array(1.0, np.float32))
    big = b.const("mask/neg", np.array(-10000.0, np.float32))
    m = b.op("Mul", [b.op("Sub", [one, m], "mask/inverted"), big], "mask/additive")
    shape = b.const("mask/shape", np.array([batch, 1, 1, seq], np.int64))
    m = b.op("Reshape", [m, shape], "mask/broadcastable")

    attn = b.attention("hidden_states", "layer/attention", batch, seq, hidden, heads, m)
    h = b.op("Add", ["hidden_states", attn], "layer/attention/residual")
    h = layer_norm_written_out(b, h, "layer/attention/ln", hidden)
    f = gelu_erf(b, b.linear(h, "layer/intermediate", hidden, ffn), "layer/intermediate/gelu")
    f = b.linear(f, "layer/ffn_output", ffn, hidden)
    out = b.op("Add", [h, f], "layer/ffn_output/residual")
    out = layer_norm_written_out(b, out, "layer/output/ln", hidden)
    b.nodes.append(helper.make_node("Identity", [out], ["last_hidden_state"], name="output"))

    x = rng.standard_normal((batch, seq, hidden)).astype(np.float32)
    mask = np.ones((batch, seq), np.int64)
    mask[1, seq - 16 :] = 0
    return transformer_case(
        "bert_encoder_layer", 13, b,
        {"hidden_states": x, "attention_mask": mask},
        {"last_hidden_state": (batch, seq, hidden)},
    )  # fmt: skip


def gpt_decoder_2block(rng: np.random.Generator) -> Case:
    batch, seq, hidden, heads, ffn, vocab = 2, 64, 256, 4, 1024, 512
    b = Builder(rng)
    # Token ids are looked up in the embedding table (a Gather with run-time indices); learned
    # position embeddings are added in the graph.
    wte = b.weight("wte", (vocab, hidden), 0.25)
    tokens = b.op("Gather", [wte, "input_ids"], "embed/tokens", axis=0)
    wpe = b.weight("wpe", (seq, hidden), 0.25)
    h = b.op("Add", [tokens, wpe], "embed/out")
    causal = np.triu(np.full((seq, seq), -10000.0, np.float32), k=1).reshape(1, 1, seq, seq)
    mask = b.const("causal_mask", causal)
    for layer in range(2):
        p = f"h.{layer}"
        g1, b1 = b.ln_params(f"{p}/ln_1", hidden)
        a = b.op("LayerNormalization", [h, g1, b1], f"{p}/ln_1/out", axis=-1, epsilon=1e-5)
        a = b.attention(a, f"{p}/attn", batch, seq, hidden, heads, mask)
        h = b.op("Add", [h, a], f"{p}/attn/residual")
        g2, b2 = b.ln_params(f"{p}/ln_2", hidden)
        m = b.op("LayerNormalization", [h, g2, b2], f"{p}/ln_2/out", axis=-1, epsilon=1e-5)
        f = gelu_tanh(b, b.linear(m, f"{p}/mlp/fc", hidden, ffn), f"{p}/mlp/gelu")
        h = b.op("Add", [h, b.linear(f, f"{p}/mlp/proj", ffn, hidden)], f"{p}/mlp/residual")
    gf, bf = b.ln_params("ln_f", hidden)
    h = b.op("LayerNormalization", [h, gf, bf], "ln_f/out", axis=-1, epsilon=1e-5)
    head = b.weight("lm_head/weight", (hidden, vocab), 1.0 / math.sqrt(hidden))
    b.nodes.append(helper.make_node("MatMul", [h, head], ["logits"], name="lm_head"))

    ids = rng.integers(0, vocab, size=(batch, seq), dtype=np.int64)
    return transformer_case(
        "gpt_decoder_2block", 17, b, {"input_ids": ids}, {"logits": (batch, seq, vocab)}
    )


def transformer_case(name: str, opset: int, b: Builder, inputs: dict[str, np.ndarray],
                     outputs: dict[str, tuple]) -> Case:  # fmt: skip
    opsets = [helper.make_opsetid("", opset)]
    graph = helper.make_graph(
        b.nodes,
        name,
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                          list(a.shape))  # fmt: skip
            for n, a in inputs.items()
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs.items()],
        initializer=[numpy_helper.from_array(a, n) for n, a in b.inits.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets, ignore_unknown=True),
        producer_name=PRODUCER,
    )
    return Case(model, inputs)


CASES = {
    **{name: (lambda rng, name=name: real_cnn(name, rng)) for name in LIGHT_MODELS},
    "bert_encoder_layer": bert_encoder_layer,
    "gpt_decoder_2block": gpt_decoder_2block,
}


# --------------------------------------------------------------------------------------------
# Reference outputs, statistics, files
# --------------------------------------------------------------------------------------------


def run_reference(model: Path | bytes, inputs: dict[str, np.ndarray],
                  names: list[str] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Outputs of onnxruntime's CPU provider, one thread, no graph rewrites, in graph order."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = names or [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def infer_shapes_without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference on a copy whose float initializers are graph inputs of the same shape:
    the same shapes, without serialising hundreds of megabytes of weights."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    del light.graph.initializer[:]
    for t in model.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            info = helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            light.graph.input.append(info)
        else:
            light.graph.initializer.append(t)
    return shape_inference.infer_shapes(light)


def macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of the Conv, Gemm and MatMul nodes (from inferred shapes)."""
    g = infer_shapes_without_weights(model).graph
    shapes = {}
    for v in [*g.input, *g.value_info, *g.output]:
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    total = 0
    for n in g.node:
        out = shapes.get(n.output[0])
        if not out:
            continue
        if n.op_type == "Conv":
            w = shapes[n.input[1]]
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            a = shapes[n.input[0]]
            total += int(np.prod(out)) * (a[0] if attr(n, "transA", 0) else a[1])
        elif n.op_type == "MatMul":
            a = shapes[n.input[0]]
            total += int(np.prod(out)) * a[-1]
    return total


def replace_dir(new: Path, dest: Path) -> None:
    """Put the finished folder ``new`` at ``dest``, moving any old one aside first."""
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out_dir))
    try:
        model_path = tmp / "model.onnx"
        model_path.write_bytes(case.model.SerializeToString())
        onnx.checker.check_model(str(model_path), full_check=True)
        expected = run_reference(model_path, case.inputs)
        for n, a in expected.items():
            if a.dtype != np.float32 or not np.all(np.isfinite(a)):
                raise RuntimeError(f"{name}: output {n} is {a.dtype} or not finite")
        data = tmp / "test_data_set_0"
        data.mkdir()
        for kind, arrays in (("input", case.inputs), ("output", expected)):
            for k, (tensor, array) in enumerate(arrays.items()):
                pb = numpy_helper.from_array(array, tensor)
                (data / f"{kind}_{k}.pb").write_bytes(pb.SerializeToString())
        (tmp / "tolerance.json").write_text(json.dumps(TOLERANCE) + "\n")
        replace_dir(tmp, out_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    stats = ", ".join(
        f"{n}{list(a.shape)} max|.| {np.abs(a).max():.3g} std {a.std():.3g}"
        for n, a in expected.items()
    )
    weights = sum(int(np.prod(t.dims)) for t in case.model.graph.initializer)
    return f"{name}: {macs(case.model) / 1e9:.2f} GMAC, {weights / 1e6:.1f}M parameters; {stats}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", help="folder to write the cases into")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these cases")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    if args.out_dir is None:
        parser.error("OUT_DIR is required")
    for requested in args.only or []:
        if requested not in CASES:
            print(f"error: no case named '{requested}' (see --list)", file=sys.stderr)
            return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    written = 0
    for name, build in CASES.items():
        if args.only and name not in args.only:
            continue
        case = build(np.random.default_rng(seed_for(name)))
        print(write_case(args.out_dir, name, case), flush=True)
        written += 1
    elapsed = time.perf_counter() - start
    print(f"wrote {written} case(s) to {args.out_dir} in {elapsed:.1f} s "
          f"(onnx {onnx.__version__}, onnxruntime {ort.__version__}, "
          f"numpy {np.__version__})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
