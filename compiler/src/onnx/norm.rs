//! Import of LogSoftmax and the normalisations (BatchNormalization in inference mode,
//! InstanceNormalization, GroupNormalization, LpNormalization, MeanVarianceNormalization) as
//! small graphs of reductions and element-wise operators, each a few graph nodes that the
//! existing kernels lower (a `Reduce` with `keepdims` broadcasts back against its input).
//! Per-channel parameters are reshaped to `[C, 1, ...]`; when they are constants (inference
//! weights) the importer folds them, so BatchNormalization becomes one multiply and one add.
//! Opset-dependent behaviour follows onnx/docs/Operators.md and Changelog.md, cited per op.

use super::ImportError;
use super::fold;
use super::import::{Importer, NodeCx};
use tessera_ir::graph::{BinaryOp, GraphOp, ReduceKind, ReduceSpec, UnaryOp, ValueId};
use tessera_ir::host::HostTensor;

/// Names the `step`-th helper node of `cx`; the node giving the result uses `cx.name`.
fn sub(cx: &NodeCx, step: &str) -> String {
    format!("{}/{step}", cx.name)
}

fn bin(
    imp: &mut Importer,
    cx: &NodeCx,
    name: &str,
    op: BinaryOp,
    a: ValueId,
    b: ValueId,
) -> Result<ValueId, ImportError> {
    imp.emit(cx, name, GraphOp::Binary(op), &[a, b])
}

fn reduce(
    imp: &mut Importer,
    cx: &NodeCx,
    name: &str,
    kind: ReduceKind,
    axes: Vec<usize>,
    x: ValueId,
) -> Result<ValueId, ImportError> {
    let spec = ReduceSpec {
        kind,
        axes,
        keepdims: true,
    };
    imp.emit(cx, name, GraphOp::Reduce(spec), &[x])
}

fn scalar(imp: &mut Importer, cx: &NodeCx, step: &str, like: ValueId, v: f64) -> ValueId {
    let dtype = imp.ty(like).dtype;
    imp.constant(&sub(cx, step), HostTensor::from_f64(dtype, &[], &[v]))
}

fn reshape(
    imp: &mut Importer,
    cx: &NodeCx,
    name: &str,
    v: ValueId,
    shape: Vec<usize>,
) -> Result<ValueId, ImportError> {
    imp.emit(cx, name, GraphOp::Reshape { shape }, &[v])
}

fn float_input(imp: &Importer, cx: &NodeCx, v: ValueId) -> Result<(), ImportError> {
    let dtype = imp.ty(v).dtype;
    if dtype.is_float() {
        return Ok(());
    }
    Err(cx.shape_err(format!("expects a float tensor, got {dtype}")))
}

/// `(x - mean) / sqrt(var + eps)` over `axes` (population variance), ending in node `name`.
fn standardize(
    imp: &mut Importer,
    cx: &NodeCx,
    name: &str,
    x: ValueId,
    axes: Vec<usize>,
    eps: f64,
) -> Result<ValueId, ImportError> {
    let mean = reduce(imp, cx, &sub(cx, "mean"), ReduceKind::Mean, axes.clone(), x)?;
    let d = bin(imp, cx, &sub(cx, "centred"), BinaryOp::Sub, x, mean)?;
    let sq = bin(imp, cx, &sub(cx, "square"), BinaryOp::Mul, d, d)?;
    let var = reduce(imp, cx, &sub(cx, "var"), ReduceKind::Mean, axes, sq)?;
    let eps = scalar(imp, cx, "eps", x, eps);
    let var = bin(imp, cx, &sub(cx, "var_eps"), BinaryOp::Add, var, eps)?;
    let std = imp.emit(cx, &sub(cx, "std"), GraphOp::Unary(UnaryOp::Sqrt), &[var])?;
    bin(imp, cx, name, BinaryOp::Div, d, std)
}

/// `[C]` parameters as `[C, 1, ...]` so they broadcast along axis 1 of a rank-`rank` input.
fn per_channel(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    p: ValueId,
    channels: usize,
    rank: usize,
) -> Result<ValueId, ImportError> {
    let elems: usize = imp.ty(p).shape.iter().product();
    if elems != channels {
        return Err(cx.shape_err(format!(
            "{step} has {elems} elements for {channels} channels"
        )));
    }
    let mut shape = vec![1; rank.saturating_sub(1)];
    if let Some(first) = shape.first_mut() {
        *first = channels;
    }
    reshape(imp, cx, &sub(cx, step), p, shape)
}

fn channels(imp: &Importer, cx: &NodeCx, x: ValueId) -> Result<(usize, usize), ImportError> {
    let shape = &imp.ty(x).shape;
    match shape.get(1) {
        Some(&c) => Ok((c, shape.len())),
        None => Err(cx.shape_err("expects an input of rank at least 2")),
    }
}

fn axis(cx: &NodeCx, a: i64, rank: usize) -> Result<usize, ImportError> {
    fold::normalize_axis(a, rank)
        .ok_or_else(|| cx.attr_err(format!("axis {a} is out of range for rank {rank}")))
}

fn inputs(cx: &NodeCx, lo: usize, hi: usize) -> Result<(), ImportError> {
    let n = cx.proto.input.len();
    if (lo..=hi).contains(&n) {
        return Ok(());
    }
    Err(cx.attr_err(format!("expects {lo} to {hi} inputs, the node lists {n}")))
}

/// LogSoftmax: `x - log(sum(exp(x)))` along the axis. From LogSoftmax-13 one `axis` (default
/// -1); before, the input is coerced to 2-D at `axis` (default 1) and each row normalised.
pub fn log_softmax(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    inputs(cx, 1, 1)?;
    let x = cx.input(0)?;
    float_input(imp, cx, x)?;
    let shape = imp.ty(x).shape.clone();
    let rank = shape.len();
    if rank == 0 {
        return Err(cx.shape_err("LogSoftmax needs an input of rank at least 1"));
    }
    if imp.opset >= 13 {
        let a = axis(cx, cx.attrs.int_or("axis", -1)?, rank)?;
        let lse = reduce(imp, cx, &sub(cx, "lse"), ReduceKind::LogSumExp, vec![a], x)?;
        return bin(imp, cx, cx.name, BinaryOp::Sub, x, lse);
    }
    let a = axis(cx, cx.attrs.int_or("axis", 1)?, rank)?;
    let flat = fold::flatten_shape(&shape, a as i64).map_err(|e| cx.shape_err(e))?;
    let two_d = reshape(imp, cx, &sub(cx, "to_2d"), x, flat)?;
    let lse = reduce(
        imp,
        cx,
        &sub(cx, "lse"),
        ReduceKind::LogSumExp,
        vec![1],
        two_d,
    )?;
    let y = bin(imp, cx, &sub(cx, "y"), BinaryOp::Sub, two_d, lse)?;
    reshape(imp, cx, cx.name, y, shape)
}

/// BatchNormalization in inference mode: `(x - mean) / sqrt(var + eps) * scale + B` per
/// channel, as `x * s + t` with `s = scale / sqrt(var + eps)` and `t = B - mean * s` (folded
/// when the statistics are constants). `training_mode=1` (BatchNormalization-14+) computes
/// batch statistics and more outputs and is refused; the legacy `spatial`/`is_test`
/// attributes (before 9 / 7) do not change inference with `[C]` parameters.
pub fn batch_norm(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    if cx.attrs.flag_or("training_mode", false)? {
        return Err(ImportError::Opset {
            detail: format!(
                "node \"{}\": BatchNormalization with training_mode=1 is not supported",
                cx.name
            ),
        });
    }
    inputs(cx, 5, 5)?;
    let x = cx.input(0)?;
    float_input(imp, cx, x)?;
    let (c, rank) = channels(imp, cx, x)?;
    let [scale, bias, mean, var] = [1, 2, 3, 4].map(|i| cx.input(i));
    let eps = scalar(
        imp,
        cx,
        "eps",
        x,
        f64::from(cx.attrs.float_or("epsilon", 1e-5)?),
    );
    let var = bin(imp, cx, &sub(cx, "var_eps"), BinaryOp::Add, var?, eps)?;
    let std = imp.emit(cx, &sub(cx, "std"), GraphOp::Unary(UnaryOp::Sqrt), &[var])?;
    let s = bin(imp, cx, &sub(cx, "s"), BinaryOp::Div, scale?, std)?;
    let ms = bin(imp, cx, &sub(cx, "mean_s"), BinaryOp::Mul, mean?, s)?;
    let t = bin(imp, cx, &sub(cx, "t"), BinaryOp::Sub, bias?, ms)?;
    let s = per_channel(imp, cx, "s_c", s, c, rank)?;
    let t = per_channel(imp, cx, "t_c", t, c, rank)?;
    let xs = bin(imp, cx, &sub(cx, "xs"), BinaryOp::Mul, x, s)?;
    bin(imp, cx, cx.name, BinaryOp::Add, xs, t)
}

/// InstanceNormalization (same at every opset): standardise over the spatial axes (2..) of each
/// (batch, channel), then per-channel `scale` and `B`.
pub fn instance_norm(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    inputs(cx, 3, 3)?;
    let x = cx.input(0)?;
    float_input(imp, cx, x)?;
    let (c, rank) = channels(imp, cx, x)?;
    if rank < 3 {
        return Err(cx.shape_err("expects an input of rank at least 3"));
    }
    let eps = f64::from(cx.attrs.float_or("epsilon", 1e-5)?);
    let y = standardize(imp, cx, &sub(cx, "norm"), x, (2..rank).collect(), eps)?;
    let scale = per_channel(imp, cx, "scale_c", cx.input(1)?, c, rank)?;
    let bias = per_channel(imp, cx, "bias_c", cx.input(2)?, c, rank)?;
    let ys = bin(imp, cx, &sub(cx, "scaled"), BinaryOp::Mul, y, scale)?;
    bin(imp, cx, cx.name, BinaryOp::Add, ys, bias)
}

/// GroupNormalization: standardise each of `num_groups` channel groups (with their spatial
/// axes), then per-channel `scale` and `bias`. GroupNormalization-21 takes `[C]` parameters;
/// GroupNormalization-18 took `[num_groups]` ones (deprecated), which are refused.
pub fn group_norm(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    inputs(cx, 3, 3)?;
    if imp.opset < 21 {
        return Err(ImportError::Opset {
            detail: format!(
                "node \"{}\": GroupNormalization-18 (per-group scale and bias) is not supported",
                cx.name
            ),
        });
    }
    let x = cx.input(0)?;
    float_input(imp, cx, x)?;
    let (c, rank) = channels(imp, cx, x)?;
    let shape = imp.ty(x).shape.clone();
    let groups = usize::try_from(cx.attrs.int_required("num_groups")?)
        .ok()
        .filter(|&g| g > 0 && c % g == 0)
        .ok_or_else(|| cx.attr_err(format!("num_groups must divide the {c} channels")))?;
    let eps = f64::from(cx.attrs.float_or("epsilon", 1e-5)?);
    let group_elems = shape[1..].iter().product::<usize>() / groups;
    let grouped = reshape(
        imp,
        cx,
        &sub(cx, "grouped"),
        x,
        vec![shape[0], groups, group_elems],
    )?;
    let y = standardize(imp, cx, &sub(cx, "norm"), grouped, vec![2], eps)?;
    let y = reshape(imp, cx, &sub(cx, "ungrouped"), y, shape)?;
    let scale = per_channel(imp, cx, "scale_c", cx.input(1)?, c, rank)?;
    let bias = per_channel(imp, cx, "bias_c", cx.input(2)?, c, rank)?;
    let ys = bin(imp, cx, &sub(cx, "scaled"), BinaryOp::Mul, y, scale)?;
    bin(imp, cx, cx.name, BinaryOp::Add, ys, bias)
}

/// LpNormalization (same at every opset): `x / ||x||_p` along `axis` (default -1), p 1 or 2.
pub fn lp_norm(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    inputs(cx, 1, 1)?;
    let x = cx.input(0)?;
    float_input(imp, cx, x)?;
    let rank = imp.ty(x).shape.len();
    let a = axis(cx, cx.attrs.int_or("axis", -1)?, rank)?;
    let kind = match cx.attrs.int_or("p", 2)? {
        1 => ReduceKind::L1,
        2 => ReduceKind::L2,
        p => return Err(cx.attr_err(format!("p must be 1 or 2, got {p}"))),
    };
    let norm = reduce(imp, cx, &sub(cx, "norm"), kind, vec![a], x)?;
    // A zero vector stays zero (as the ONNX reference computes it) instead of 0/0: the norm is
    // at least the smallest normal f32, which only an all-zero lane reaches.
    let tiny = scalar(imp, cx, "tiny", x, f64::from(f32::MIN_POSITIVE));
    let norm = bin(imp, cx, &sub(cx, "norm_nz"), BinaryOp::Max, norm, tiny)?;
    bin(imp, cx, cx.name, BinaryOp::Div, x, norm)
}

/// MeanVarianceNormalization: `(x - mean) / sqrt(var)` over `axes` (default `[0, 2, 3]`);
/// the ONNX function body and reference add 1e-9 to keep a constant input finite.
pub fn mean_variance_norm(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    inputs(cx, 1, 1)?;
    let x = cx.input(0)?;
    float_input(imp, cx, x)?;
    let rank = imp.ty(x).shape.len();
    let given = cx.attrs.ints("axes")?.map(<[i64]>::to_vec);
    let mut axes = given
        .unwrap_or_else(|| vec![0, 2, 3])
        .into_iter()
        .map(|a| axis(cx, a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    axes.sort_unstable();
    axes.dedup();
    standardize(imp, cx, cx.name, x, axes, 1e-9)
}

/// RMSNormalization (23): `x / sqrt(mean(x^2) + epsilon) * scale` over every axis from `axis`
/// (default -1) on; `scale` broadcasts against those trailing axes. `stash_type` only chooses
/// the precision of the statistics, which are computed in the input type here (f32).
pub fn rms_norm(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    inputs(cx, 2, 2)?;
    let x = cx.input(0)?;
    float_input(imp, cx, x)?;
    let rank = imp.ty(x).shape.len();
    let a = axis(cx, cx.attrs.int_or("axis", -1)?, rank)?;
    let eps = f64::from(cx.attrs.float_or("epsilon", 1e-5)?);
    let sq = bin(imp, cx, &sub(cx, "square"), BinaryOp::Mul, x, x)?;
    let ms = reduce(
        imp,
        cx,
        &sub(cx, "mean_square"),
        ReduceKind::Mean,
        (a..rank).collect(),
        sq,
    )?;
    let eps = scalar(imp, cx, "eps", x, eps);
    let ms = bin(imp, cx, &sub(cx, "ms_eps"), BinaryOp::Add, ms, eps)?;
    let rms = imp.emit(cx, &sub(cx, "rms"), GraphOp::Unary(UnaryOp::Sqrt), &[ms])?;
    let y = bin(imp, cx, &sub(cx, "normed"), BinaryOp::Div, x, rms)?;
    bin(imp, cx, cx.name, BinaryOp::Mul, y, cx.input(1)?)
}

/// LayerNormalization (opset 17): normalise over every axis from `axis` (default -1):
/// `Y = (X - mean) * InvStdDev * Scale + B`. The optional second and third outputs are the
/// `Mean` and `InvStdDev` it computed (kept-dims shape), as the spec defines them.
pub fn layer_norm(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    inputs(cx, 2, 3)?;
    let x = cx.input(0)?;
    float_input(imp, cx, x)?;
    let rank = imp.ty(x).shape.len();
    let a = axis(cx, cx.attrs.int_or("axis", -1)?, rank)?;
    let eps = f64::from(cx.attrs.float_or("epsilon", 1e-5)?);
    let axes: Vec<usize> = (a..rank).collect();
    let mean = reduce(imp, cx, &sub(cx, "mean"), ReduceKind::Mean, axes.clone(), x)?;
    let d = bin(imp, cx, &sub(cx, "centred"), BinaryOp::Sub, x, mean)?;
    let sq = bin(imp, cx, &sub(cx, "square"), BinaryOp::Mul, d, d)?;
    let var = reduce(imp, cx, &sub(cx, "var"), ReduceKind::Mean, axes, sq)?;
    let eps = scalar(imp, cx, "eps", x, eps);
    let var = bin(imp, cx, &sub(cx, "var_eps"), BinaryOp::Add, var, eps)?;
    let std = imp.emit(cx, &sub(cx, "std"), GraphOp::Unary(UnaryOp::Sqrt), &[var])?;
    let inv = imp.emit(
        cx,
        &sub(cx, "inv_std"),
        GraphOp::Unary(UnaryOp::Reciprocal),
        &[std],
    )?;
    let normed = bin(imp, cx, &sub(cx, "normed"), BinaryOp::Mul, d, inv)?;
    let y = match cx.opt_input(2) {
        Some(b) => {
            let scaled = bin(
                imp,
                cx,
                &sub(cx, "scaled"),
                BinaryOp::Mul,
                normed,
                cx.input(1)?,
            )?;
            bin(imp, cx, cx.name, BinaryOp::Add, scaled, b)?
        }
        None => bin(imp, cx, cx.name, BinaryOp::Mul, normed, cx.input(1)?)?,
    };
    imp.extra_outputs = vec![mean, inv];
    Ok(y)
}
