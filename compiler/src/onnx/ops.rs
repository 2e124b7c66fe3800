//! Per-operator conversion from ONNX nodes to [`GraphOp`]s, opset by opset.
//!
//! Each converter normalises the node to the graph IR's form (axes non-negative, shapes static,
//! older opsets rewritten to the current meaning) and emits it through [`Importer::emit`], which
//! folds it when its operands are constants. Opset-dependent behaviour cites the operator's
//! entry in onnx/docs/Operators.md (and Changelog.md for the older versions).

use super::ImportError;
use super::fold;
use super::import::{Importer, NodeCx};
use super::proto::data_type;
use super::tensor::{dtype_of, tensor_to_host};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{BinaryOp, GraphOp, ReduceKind, ReduceSpec, UnaryOp, ValueId};
use tessera_ir::host::HostTensor;

/// The first ai.onnx opset that has `op_type`, for the operators tessera imports; `None` for
/// the others.
pub fn since_opset(op_type: &str) -> Option<i64> {
    Some(match op_type {
        "MatMul" | "Gemm" | "Add" | "Sub" | "Mul" | "Div" | "Relu" | "Sigmoid" | "Tanh"
        | "Softmax" | "Reshape" | "Transpose" | "Flatten" | "Identity" | "Constant" | "Shape"
        | "Gather" | "Concat" | "Unsqueeze" | "Squeeze" | "Cast" => 1,
        op if super::reduce::reduce_kind(op).is_some() => 1,
        "ArgMax" | "ArgMin" => 1,
        "LogSoftmax" | "BatchNormalization" | "InstanceNormalization" | "LpNormalization" => 1,
        "MeanVarianceNormalization" => 9,
        "GroupNormalization" => 18,
        "RMSNormalization" => 23,
        "LayerNormalization" => 17,
        "ConstantOfShape" => 9,
        "Range" => 11,
        op if super::movement::handles(op) => return super::movement::since_opset(op),
        "Attention" => 23,
        "NegativeLogLikelihoodLoss" | "SoftmaxCrossEntropyLoss" => 12,
        "RotaryEmbedding" => 23,
        "Swish" => 24,
        "ThresholdedRelu" => 10,
        op if super::conv::since_opset(op).is_some() => 1,
        op if super::index::since_opset(op).is_some() => return super::index::since_opset(op),
        "Resize" => 10,
        "Upsample" => 7,
        "Einsum" => 12,
        "CumSum" => 11,
        "CumProd" => 26,
        "Hardmax" => 1,
        other => return super::elementwise::since_opset(other),
    })
}

/// Every ai.onnx operator the importer converts (for `tessera list-ops` and docs).
pub const SUPPORTED_OPS: [&str; 125] = [
    "MatMul",
    "Gemm",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Reshape",
    "Transpose",
    "Flatten",
    "Identity",
    "Constant",
    "Shape",
    "Gather",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "ConstantOfShape",
    "Range",
    "Cast",
    // Element-wise operators (elementwise.rs).
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Erf",
    "Neg",
    "Abs",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "Mod",
    "Sum",
    "Mean",
    "Max",
    "Min",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Softsign",
    "Gelu",
    "Mish",
    "Sin",
    "Cos",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "Where",
    "IsNaN",
    "IsInf",
    "CastLike",
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "LogSoftmax",
    "BatchNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "LpNormalization",
    "MeanVarianceNormalization",
    "ArgMax",
    "ArgMin",
    "RMSNormalization",
    "LayerNormalization",
    // Shape and data movement (movement.rs).
    "Slice",
    "Expand",
    "Tile",
    "Pad",
    "Split",
    "DepthToSpace",
    "SpaceToDepth",
    "Size",
    "Dropout",
    "EyeLike",
    "Trilu",
    "Attention",
    "NegativeLogLikelihoodLoss",
    "SoftmaxCrossEntropyLoss",
    "RotaryEmbedding",
    "Swish",
    "ThresholdedRelu",
    // Convolution and pooling (conv.rs).
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LRN",
    // Indexing with value indices (index.rs).
    "GatherElements",
    "GatherND",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "OneHot",
    "TopK",
    "Resize",
    "Upsample",
    "Einsum",
    "CumSum",
    "CumProd",
    "Hardmax",
];

/// Converts one node; returns the value holding its (single) result.
pub fn convert(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let unary = |op| GraphOp::Unary(op);
    match cx.op_type() {
        "MatMul" => {
            arity(cx, 2, 2)?;
            imp.emit(cx, cx.name, GraphOp::MatMul, &[cx.input(0)?, cx.input(1)?])
        }
        "Gemm" => gemm(imp, cx),
        "Add" => binary(imp, cx, BinaryOp::Add),
        "Sub" => binary(imp, cx, BinaryOp::Sub),
        "Mul" => binary(imp, cx, BinaryOp::Mul),
        "Div" => binary(imp, cx, BinaryOp::Div),
        // Relu/Sigmoid/Tanh-1 differ from -6 only in the legacy `consumed_inputs` attribute,
        // which does not change the result.
        "Relu" => one_input(imp, cx, unary(UnaryOp::Relu)),
        "Sigmoid" => one_input(imp, cx, unary(UnaryOp::Sigmoid)),
        "Tanh" => one_input(imp, cx, unary(UnaryOp::Tanh)),
        "Identity" => one_input(imp, cx, GraphOp::Identity),
        "Softmax" => softmax(imp, cx),
        "Reshape" => reshape(imp, cx),
        "Transpose" => transpose(imp, cx),
        "Flatten" => flatten(imp, cx),
        "Constant" => constant(imp, cx),
        "Shape" => shape(imp, cx),
        "Gather" => gather(imp, cx),
        "Concat" => concat(imp, cx),
        "Unsqueeze" => unsqueeze(imp, cx),
        "Squeeze" => squeeze(imp, cx),
        "ConstantOfShape" => constant_of_shape(imp, cx),
        "Range" => range(imp, cx),
        "Cast" => cast(imp, cx),
        "ArgMax" => super::reduce::arg_reduce(imp, cx, true),
        "ArgMin" => super::reduce::arg_reduce(imp, cx, false),
        "LogSoftmax" => super::norm::log_softmax(imp, cx),
        "BatchNormalization" => super::norm::batch_norm(imp, cx),
        "InstanceNormalization" => super::norm::instance_norm(imp, cx),
        "GroupNormalization" => super::norm::group_norm(imp, cx),
        "LpNormalization" => super::norm::lp_norm(imp, cx),
        "RMSNormalization" => super::norm::rms_norm(imp, cx),
        "LayerNormalization" => super::norm::layer_norm(imp, cx),
        "MeanVarianceNormalization" => super::norm::mean_variance_norm(imp, cx),
        "Attention" => super::attention::attention(imp, cx),
        "NegativeLogLikelihoodLoss" => super::loss::nll_loss(imp, cx),
        "SoftmaxCrossEntropyLoss" => super::loss::softmax_cross_entropy(imp, cx),
        "RotaryEmbedding" => super::rotary::rotary_embedding(imp, cx),
        "Swish" => super::activation::swish(imp, cx),
        "ThresholdedRelu" => super::activation::thresholded_relu(imp, cx),
        "Resize" => super::resize::resize(imp, cx),
        "Upsample" => super::resize::upsample(imp, cx),
        "Einsum" => super::einsum::einsum(imp, cx),
        "CumSum" => super::cumsum::cumsum(imp, cx),
        "CumProd" => super::cumsum::cumprod(imp, cx),
        "Hardmax" => super::hardmax::hardmax(imp, cx),
        op if let Some(kind) = super::reduce::reduce_kind(op) => {
            super::reduce::reduce(imp, cx, kind)
        }
        op if super::conv::OPS.contains(&op) => super::conv::convert(imp, cx),
        op if super::index::since_opset(op).is_some() => super::index::convert(imp, cx),
        op if super::elementwise::handles(op) => super::elementwise::convert(imp, cx),
        op if super::movement::handles(op) => super::movement::convert(imp, cx),
        other => Err(cx.attr_err(format!("operator {other} is not imported"))),
    }
}

fn arity(cx: &NodeCx, lo: usize, hi: usize) -> Result<(), ImportError> {
    let n = cx.proto.input.len();
    if (lo..=hi).contains(&n) {
        return Ok(());
    }
    let want = if lo == hi {
        lo.to_string()
    } else {
        format!("{lo} to {hi}")
    };
    Err(cx.attr_err(format!("expects {want} input(s), the node lists {n}")))
}

fn one_input(imp: &mut Importer, cx: &NodeCx, op: GraphOp) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    imp.emit(cx, cx.name, op, &[cx.input(0)?])
}

/// The integer values of an input that must be known at compile time (a shape, axes, ...).
pub(super) fn const_ints(
    imp: &Importer,
    cx: &NodeCx,
    v: ValueId,
    what: &str,
) -> Result<Vec<i64>, ImportError> {
    let t = imp
        .constant_of(v)
        .ok_or_else(|| needs_constant(imp, cx, v, what))?;
    fold::tensor_ints(t).ok_or_else(|| {
        cx.shape_err(if t.dtype == DType::U64 {
            format!("{what} holds a uint64 value above the int64 range")
        } else {
            format!("{what} must be an integer tensor, it is {}", t.dtype)
        })
    })
}

/// The error for a value `v` that must be a constant: it names `v` when `v` is a graph input,
/// else the graph input it is computed from (so that freezing that input makes it constant).
pub(super) fn needs_constant(imp: &Importer, cx: &NodeCx, v: ValueId, what: &str) -> ImportError {
    let g = &imp.graph;
    let (what, value) = match super::movement::source_input(g, v) {
        Some(i) if i != v => (
            format!("{what}, computed from graph input"),
            g.value(i).name.clone(),
        ),
        _ => (what.to_string(), g.value(v).name.clone()),
    };
    ImportError::NeedsConstant {
        node: cx.name.to_string(),
        op_type: cx.op_type().to_string(),
        what,
        value,
    }
}

fn axis_of(cx: &NodeCx, axis: i64, rank: usize) -> Result<usize, ImportError> {
    fold::normalize_axis(axis, rank)
        .ok_or_else(|| cx.attr_err(format!("axis {axis} is out of range for rank {rank}")))
}

fn reshape_to(
    imp: &mut Importer,
    cx: &NodeCx,
    node_name: &str,
    v: ValueId,
    shape: Vec<usize>,
) -> Result<ValueId, ImportError> {
    imp.emit(cx, node_name, GraphOp::Reshape { shape }, &[v])
}

/// Gemm. C became optional at opset 11 (Gemm-11); before opset 7 a `broadcast` attribute said
/// whether C may broadcast, otherwise it must be exactly [M, N] (Gemm-6). From Gemm-7 C
/// broadcasts unidirectionally, which is the graph op's rule.
fn gemm(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 2, 3)?;
    let a = &cx.attrs;
    let op = GraphOp::Gemm {
        alpha: f64::from(a.float_or("alpha", 1.0)?),
        beta: f64::from(a.float_or("beta", 1.0)?),
        trans_a: a.flag_or("transA", false)?,
        trans_b: a.flag_or("transB", false)?,
    };
    let c = cx.opt_input(2);
    if c.is_none() && imp.opset < 11 {
        return Err(ImportError::Opset {
            detail: format!(
                "node \"{}\" (Gemm): input C is optional only from opset 11, and the model \
                 imports opset {}",
                cx.name, imp.opset
            ),
        });
    }
    let mut ins = vec![cx.input(0)?, cx.input(1)?];
    ins.extend(c);
    let y = imp.emit(cx, cx.name, op, &ins)?;
    if let Some(c) = c
        && imp.opset < 7
        && !a.flag_or("broadcast", false)?
        && imp.ty(c).shape != imp.ty(y).shape
    {
        return Err(cx.shape_err(format!(
            "before opset 7, C must be exactly [M, N] = {:?} unless broadcast=1, it is {:?}",
            imp.ty(y).shape,
            imp.ty(c).shape
        )));
    }
    Ok(y)
}

/// Add, Sub, Mul, Div. From opset 7 they broadcast as numpy does. Before (Add-6 and its
/// siblings) shapes must be equal unless `broadcast=1`, and then B's dims line up with A's from
/// `axis` (by default from the back, which is numpy's rule); we reshape B so numpy's rule
/// gives the same alignment.
fn binary(imp: &mut Importer, cx: &NodeCx, op: BinaryOp) -> Result<ValueId, ImportError> {
    arity(cx, 2, 2)?;
    let (a, mut b) = (cx.input(0)?, cx.input(1)?);
    if imp.opset < 7 {
        let (sa, sb) = (imp.ty(a).shape.clone(), imp.ty(b).shape.clone());
        if !cx.attrs.flag_or("broadcast", false)? {
            if sa != sb {
                return Err(cx.shape_err(format!(
                    "before opset 7, operands must have equal shapes unless broadcast=1, \
                     got {sa:?} and {sb:?}"
                )));
            }
        } else if let Some(axis) = cx.attrs.int("axis")? {
            let start = fold::normalize_axis(axis, sa.len())
                .filter(|s| s + sb.len() <= sa.len())
                .ok_or_else(|| {
                    cx.attr_err(format!(
                        "axis {axis} does not place B {sb:?} inside A {sa:?}"
                    ))
                })?;
            let mut aligned = sb.clone();
            aligned.resize(sa.len() - start, 1);
            if aligned != sb {
                let name = format!("{}/align_b", cx.name);
                b = reshape_to(imp, cx, &name, b, aligned)?;
            }
        }
    }
    imp.emit(cx, cx.name, GraphOp::Binary(op), &[a, b])
}

/// Softmax. From opset 13 it normalises along one `axis` (default -1). Before, it flattens the
/// input to 2-D at `axis` (default 1) and normalises each row of
/// `[prod(d[:axis]), prod(d[axis:])]` (Softmax-1/-11), which we spell as Reshape, Softmax on
/// axis 1, Reshape back. f16 inputs use [`softmax_steps`].
fn softmax(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let x = cx.input(0)?;
    let shape = imp.ty(x).shape.clone();
    if shape.is_empty() {
        return Err(cx.shape_err("Softmax needs an input of rank at least 1"));
    }
    let rank = shape.len();
    if imp.opset >= 13 {
        let axis = axis_of(cx, cx.attrs.int_or("axis", -1)?, rank)?;
        return softmax_along(imp, cx, cx.name, x, axis);
    }
    let axis = axis_of(cx, cx.attrs.int_or("axis", 1)?, rank)?;
    // Coercing at the last axis gives rows that are exactly the last axis: no reshape needed.
    if axis + 1 == rank {
        return softmax_along(imp, cx, cx.name, x, axis);
    }
    let flat = fold::flatten_shape(&shape, axis as i64).map_err(|e| cx.shape_err(e))?;
    let two_d = reshape_to(imp, cx, &format!("{}/to_2d", cx.name), x, flat)?;
    let y = softmax_along(imp, cx, cx.name, two_d, 1)?;
    reshape_to(imp, cx, &format!("{}/from_2d", cx.name), y, shape)
}

/// Softmax of `x` along `axis`, ending in a node named `name`: the fused kernel (f32 inside,
/// rounded once), or [`softmax_steps`] for f16.
fn softmax_along(
    imp: &mut Importer,
    cx: &NodeCx,
    name: &str,
    x: ValueId,
    axis: usize,
) -> Result<ValueId, ImportError> {
    if imp.ty(x).dtype == DType::F16 && imp.ty(x).elems() > 0 {
        return softmax_steps(imp, cx, name, x, axis);
    }
    imp.emit(cx, name, GraphOp::Softmax { axis }, &[x])
}

/// Softmax spelled as its ONNX function body (Softmax-13: ReduceMax, Sub, Exp, ReduceSum, Div),
/// each step an f16 tensor as in the reference (`x - max`, `exp` and the quotient rounded to
/// f16 one by one; numpy sums f16 in f32 and rounds once, as our ReduceSum does). f16's
/// precision is fine enough that the test tolerance (1e-3 relative, about two f16 ulps) sees
/// the difference between this and the fused kernel's single rounding once a MatMul follows.
fn softmax_steps(
    imp: &mut Importer,
    cx: &NodeCx,
    name: &str,
    x: ValueId,
    axis: usize,
) -> Result<ValueId, ImportError> {
    let step = |s: &str| format!("{}/softmax_{s}", cx.name);
    let reduce = |kind| {
        GraphOp::Reduce(ReduceSpec {
            kind,
            axes: vec![axis],
            keepdims: true,
        })
    };
    let max = imp.emit(cx, &step("max"), reduce(ReduceKind::Max), &[x])?;
    let shifted = imp.emit(cx, &step("sub"), GraphOp::Binary(BinaryOp::Sub), &[x, max])?;
    let e = imp.emit(cx, &step("exp"), GraphOp::Unary(UnaryOp::Exp), &[shifted])?;
    let sum = imp.emit(cx, &step("sum"), reduce(ReduceKind::Sum), &[e])?;
    imp.emit(cx, name, GraphOp::Binary(BinaryOp::Div), &[e, sum])
}

/// Reshape: the shape is an attribute before opset 5 (Reshape-1) and an input from Reshape-5;
/// `allowzero` arrives with Reshape-14.
fn reshape(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let x = cx.input(0)?;
    let (spec, allowzero) = if imp.opset >= 5 {
        arity(cx, 2, 2)?;
        let spec = const_ints(imp, cx, cx.input(1)?, "the shape input")?;
        let allowzero = imp.opset >= 14 && cx.attrs.flag_or("allowzero", false)?;
        (spec, allowzero)
    } else {
        arity(cx, 1, 1)?;
        let spec = cx
            .attrs
            .ints("shape")?
            .ok_or_else(|| cx.attr_err("required attribute `shape` is missing"))?;
        (spec.to_vec(), false)
    };
    let shape =
        fold::reshape_shape(&imp.ty(x).shape, &spec, allowzero).map_err(|e| cx.shape_err(e))?;
    reshape_to(imp, cx, cx.name, x, shape)
}

/// Transpose: `perm` defaults to reversing the axes (the same at every opset).
fn transpose(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let x = cx.input(0)?;
    let rank = imp.ty(x).shape.len();
    let perm = match cx.attrs.ints("perm")? {
        None => (0..rank).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&a| usize::try_from(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| cx.attr_err(format!("perm {p:?} has a negative entry")))?,
    };
    imp.emit(cx, cx.name, GraphOp::Transpose { perm }, &[x])
}

/// Flatten to 2-D at `axis` (default 1; negative values from Flatten-11), as a Reshape.
fn flatten(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let x = cx.input(0)?;
    let axis = cx.attrs.int_or("axis", 1)?;
    let shape = fold::flatten_shape(&imp.ty(x).shape, axis).map_err(|e| cx.attr_err(e))?;
    reshape_to(imp, cx, cx.name, x, shape)
}

/// Constant: `value` at every opset; `value_float(s)` and `value_int(s)` from Constant-12.
fn constant(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 0, 0)?;
    let a = &cx.attrs;
    let t = if let Some(t) = a.tensor("value")? {
        tensor_to_host(t, imp.model_dir())?
    } else if let Some(f) = a.float("value_float")? {
        HostTensor::from_f64(DType::F32, &[], &[f64::from(f)])
    } else if let Some(fs) = a.floats("value_floats")? {
        let v: Vec<f64> = fs.iter().map(|&f| f64::from(f)).collect();
        HostTensor::from_f64(DType::F32, &[v.len()], &v)
    } else if let Some(i) = a.int("value_int")? {
        fold::i64_tensor(&[], &[i])
    } else if let Some(is) = a.ints("value_ints")? {
        fold::i64_tensor(&[is.len()], is)
    } else if a.has("value_string") || a.has("value_strings") {
        return Err(ImportError::Type {
            what: format!("node \"{}\" (Constant)", cx.name),
            elem_type: "string".into(),
            detail: String::new(),
        });
    } else if a.has("sparse_value") {
        return Err(cx.attr_err("sparse constants (`sparse_value`) are not supported"));
    } else {
        return Err(cx.attr_err("no `value` attribute (or value_float(s)/value_int(s))"));
    };
    Ok(imp.constant(cx.name, t))
}

/// Shape: always a constant, since every shape is static. `start`/`end` arrive with Shape-15.
fn shape(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let dims = imp.ty(cx.input(0)?).shape.clone();
    let (start, end) = if imp.opset >= 15 {
        (cx.attrs.int_or("start", 0)?, cx.attrs.int("end")?)
    } else {
        (0, None)
    };
    Ok(imp.constant(cx.name, fold::shape_op(&dims, start, end)))
}

/// Gather along `axis` (default 0); negative indices are allowed from Gather-11, and the
/// evaluator accepts them at every opset.
fn gather(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 2, 2)?;
    let (data, idx) = (cx.input(0)?, cx.input(1)?);
    let axis = axis_of(cx, cx.attrs.int_or("axis", 0)?, imp.ty(data).shape.len())?;
    imp.emit(cx, cx.name, GraphOp::Gather { axis }, &[data, idx])
}

/// Concat: `axis` defaults to 1 before opset 4 (Concat-1) and is required after; negative axes
/// from Concat-11.
fn concat(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let inputs: Vec<ValueId> = cx.inputs.iter().flatten().copied().collect();
    let first = *inputs
        .first()
        .ok_or_else(|| cx.attr_err("expects at least one input"))?;
    let axis = if imp.opset < 4 {
        cx.attrs.int_or("axis", 1)?
    } else {
        cx.attrs.int_required("axis")?
    };
    let axis = axis_of(cx, axis, imp.ty(first).shape.len())?;
    imp.emit(cx, cx.name, GraphOp::Concat { axis }, &inputs)
}

/// Axes of Squeeze/Unsqueeze: an attribute before opset 13, an input from opset 13.
fn axes(imp: &Importer, cx: &NodeCx) -> Result<Option<Vec<i64>>, ImportError> {
    if imp.opset >= 13 {
        arity(cx, 1, 2)?;
        cx.opt_input(1)
            .map(|v| const_ints(imp, cx, v, "the axes input"))
            .transpose()
    } else {
        arity(cx, 1, 1)?;
        Ok(cx.attrs.ints("axes")?.map(<[i64]>::to_vec))
    }
}

/// Unsqueeze, as a Reshape (Unsqueeze-1/-11/-13: axes index the result).
fn unsqueeze(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let x = cx.input(0)?;
    let axes = axes(imp, cx)?.ok_or_else(|| cx.attr_err("the axes are missing"))?;
    let shape = fold::unsqueeze_shape(&imp.ty(x).shape, &axes).map_err(|e| cx.shape_err(e))?;
    reshape_to(imp, cx, cx.name, x, shape)
}

/// Squeeze, as a Reshape; without axes every size-1 dim goes (Squeeze-1/-11/-13).
fn squeeze(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let x = cx.input(0)?;
    let axes = axes(imp, cx)?;
    let shape =
        fold::squeeze_shape(&imp.ty(x).shape, axes.as_deref()).map_err(|e| cx.shape_err(e))?;
    reshape_to(imp, cx, cx.name, x, shape)
}

/// ConstantOfShape (from opset 9): `value` defaults to a float32 zero.
fn constant_of_shape(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let dims = const_ints(imp, cx, cx.input(0)?, "the shape input")?;
    let value = match cx.attrs.tensor("value")? {
        Some(t) => tensor_to_host(t, imp.model_dir())?,
        None => HostTensor::zeros(DType::F32, &[1]),
    };
    let t = fold::constant_of_shape(&dims, &value).map_err(|e| cx.shape_err(e))?;
    Ok(imp.constant(cx.name, t))
}

/// Range (from opset 11): three scalar constants of one type.
fn range(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 3, 3)?;
    let mut vals = [0.0; 3];
    let mut dtype = None;
    for (i, (slot, what)) in vals.iter_mut().zip(["start", "limit", "delta"]).enumerate() {
        let v = cx.input(i)?;
        let t = imp
            .constant_of(v)
            .ok_or_else(|| needs_constant(imp, cx, v, what))?;
        if t.elems() != 1 {
            return Err(cx.shape_err(format!(
                "{what} must be a scalar, it has shape {:?}",
                t.shape
            )));
        }
        if dtype.is_some_and(|d| d != t.dtype) {
            return Err(cx.shape_err("start, limit and delta must have one element type"));
        }
        dtype = Some(t.dtype);
        *slot = t.get(0);
    }
    let dtype = dtype.unwrap_or(DType::F32);
    let t = fold::range(dtype, vals[0], vals[1], vals[2]).map_err(|e| cx.shape_err(e))?;
    Ok(imp.constant(cx.name, t))
}

/// Cast: `to` is a type name string in Cast-1 and a data type code from Cast-6. A cast to
/// double imports as f32, as double initializers do.
fn cast(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let code = if imp.opset < 6 {
        let s = cx
            .attrs
            .string("to")?
            .ok_or_else(|| cx.attr_err("required attribute `to` is missing"))?;
        let name = String::from_utf8_lossy(s).to_ascii_lowercase();
        (0..=20)
            .find(|&c| data_type::name(c) == name)
            .ok_or_else(|| cx.attr_err(format!("attribute `to` names no data type: `{name}`")))?
    } else {
        i32::try_from(cx.attrs.int_required("to")?).unwrap_or(-1)
    };
    let to = dtype_of(code).ok_or_else(|| ImportError::Type {
        what: format!("node \"{}\" (Cast)", cx.name),
        elem_type: data_type::name(code).to_string(),
        detail: " (the cast's target type)".into(),
    })?;
    // Cast-19 `saturate=0`: out-of-range values become NaN/inf in float8 instead of the largest
    // finite value. The device's conversions (and `DType::round`) saturate, so refuse rather
    // than compute something else.
    let saturate = if imp.opset >= 19 {
        cx.attrs.int("saturate")?.unwrap_or(1)
    } else {
        1
    };
    if saturate == 0 && matches!(to, DType::Fp8E4m3 | DType::Fp8E5m2) {
        return Err(ImportError::Type {
            what: format!("node \"{}\" (Cast)", cx.name),
            elem_type: format!("non-saturating {to}"),
            detail: " (the device's float8 conversion saturates)".into(),
        });
    }
    imp.emit(cx, cx.name, GraphOp::Cast { to }, &[cx.input(0)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_list_matches_the_opset_table() {
        for op in SUPPORTED_OPS {
            assert!(since_opset(op).is_some(), "{op}");
        }
        assert_eq!(since_opset("Det"), None);
    }
}
