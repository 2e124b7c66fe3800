//! Import of the convolution and pooling operators (onnx/docs/Operators.md: Conv,
//! ConvTranspose, MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool, LRN).
//!
//! `auto_pad`, `output_shape` and `output_padding` are resolved here to explicit begin/end
//! pads ([`ConvSpec`], [`PoolSpec`]). Convolution weights must be known at compile time: the
//! lowering rearranges them into the tensor engine's layout, so a weight that is a graph input
//! is reported as [`ImportError::NeedsConstant`] (the conformance runner then freezes it).
//! The global pools are reductions over the spatial axes, and LRN is spelled as a banded 1x1
//! convolution over the squared input (the cross-channel window sum on the tensor engine)
//! followed by element-wise arithmetic.

use super::ImportError;
use super::import::{Importer, NodeCx};
use super::pool_indices::max_pool_indices;
use tessera_ir::graph::conv::MAX_SPATIAL;
use tessera_ir::graph::{
    BinaryOp, ConvSpec, GraphOp, PoolKind, PoolSpec, ReduceKind, ReduceSpec, ValueId,
};
use tessera_ir::host::HostTensor;

/// The ONNX operators this file converts.
pub const OPS: [&str; 8] = [
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LRN",
];

/// The first ai.onnx opset of each operator here.
pub fn since_opset(op: &str) -> Option<i64> {
    OPS.contains(&op).then_some(1)
}

/// Converts one node of an operator in [`OPS`].
pub fn convert(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    match cx.op_type() {
        "Conv" => conv(imp, cx, false),
        "ConvTranspose" => conv(imp, cx, true),
        "MaxPool" => pool(imp, cx, PoolKind::Max),
        "AveragePool" => {
            let count_include_pad = cx.attrs.flag_or("count_include_pad", false)?;
            pool(imp, cx, PoolKind::Avg { count_include_pad })
        }
        "LpPool" => {
            let p = cx.attrs.int_or("p", 2)?;
            if p <= 0 {
                return Err(cx.attr_err(format!("p must be positive, got {p}")));
            }
            pool(imp, cx, PoolKind::Lp { p: p as f64 })
        }
        "GlobalAveragePool" => global(imp, cx, ReduceKind::Mean),
        "GlobalMaxPool" => global(imp, cx, ReduceKind::Max),
        "LRN" => lrn(imp, cx),
        other => Err(cx.attr_err(format!("operator {other} is not a convolution or pool"))),
    }
}

fn inputs(cx: &NodeCx, lo: usize, hi: usize) -> Result<(), ImportError> {
    let n = cx.proto.input.len();
    if (lo..=hi).contains(&n) {
        return Ok(());
    }
    Err(cx.attr_err(format!("expects {lo} to {hi} inputs, the node lists {n}")))
}

/// A per-axis integer list attribute: `default` on every axis when absent; entries must be at
/// least `min`.
fn per_axis(
    cx: &NodeCx,
    key: &str,
    n: usize,
    default: i64,
    min: i64,
) -> Result<Vec<i64>, ImportError> {
    match cx.attrs.ints(key)? {
        None => Ok(vec![default; n]),
        Some(v) if v.len() == n && v.iter().all(|&x| x >= min) => Ok(v.to_vec()),
        Some(v) => Err(cx.attr_err(format!(
            "`{key}` {v:?} must have {n} entries of at least {min}"
        ))),
    }
}

fn usizes(v: &[i64]) -> Vec<usize> {
    v.iter().map(|&x| x as usize).collect()
}

/// The `auto_pad` attribute.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

fn auto_pad(cx: &NodeCx) -> Result<AutoPad, ImportError> {
    Ok(match cx.attrs.string("auto_pad")? {
        None | Some(b"NOTSET") => AutoPad::NotSet,
        Some(b"VALID") => AutoPad::Valid,
        Some(b"SAME_UPPER") => AutoPad::SameUpper,
        Some(b"SAME_LOWER") => AutoPad::SameLower,
        Some(other) => {
            return Err(cx.attr_err(format!(
                "auto_pad {:?} is not NOTSET, VALID, SAME_UPPER or SAME_LOWER",
                String::from_utf8_lossy(other)
            )));
        }
    })
}

/// Begin and end pads of a forward window (Conv, pools): explicit `pads`, none for VALID, or for
/// SAME_* the total `(ceil(i / s) - 1) s + (k - 1) d + 1 - i` (at least 0) split in half, the
/// odd one at the end (SAME_UPPER) or the beginning (SAME_LOWER).
fn forward_pads(
    cx: &NodeCx,
    mode: AutoPad,
    sp: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> Result<(Vec<usize>, Vec<usize>), ImportError> {
    let n = sp.len();
    match mode {
        AutoPad::NotSet => {
            let pads = usizes(&per_axis(cx, "pads", 2 * n, 0, 0)?);
            Ok((pads[..n].to_vec(), pads[n..].to_vec()))
        }
        AutoPad::Valid => Ok((vec![0; n], vec![0; n])),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut begin = Vec::with_capacity(n);
            let mut end = Vec::with_capacity(n);
            for a in 0..n {
                let out = sp[a].div_ceil(strides[a]);
                let span = (kernel[a] - 1) * dilations[a] + 1;
                let total = (out.saturating_sub(1) * strides[a] + span).saturating_sub(sp[a]);
                let small = total / 2;
                if mode == AutoPad::SameUpper {
                    begin.push(small);
                    end.push(total - small);
                } else {
                    begin.push(total - small);
                    end.push(small);
                }
            }
            Ok((begin, end))
        }
    }
}

/// Conv and ConvTranspose. The kernel shape comes from the weights (`kernel_shape`, when
/// given, must agree). ConvTranspose's output is `s (i - 1) + output_padding + (k - 1) d + 1 -
/// pads`; with `output_shape` (or SAME_* auto_pad, which asks for `i s`) the pads are the
/// total needed, split as the operator's spec says: half at the beginning rounded down for
/// SAME_UPPER, rounded up otherwise. `output_padding` is folded into the end pad.
fn conv(imp: &mut Importer, cx: &NodeCx, transpose: bool) -> Result<ValueId, ImportError> {
    inputs(cx, 2, 3)?;
    let x = cx.input(0)?;
    let w = cx.input(1)?;
    let bias = cx.opt_input(2);
    if imp.constant_of(w).is_none() {
        return Err(ImportError::NeedsConstant {
            node: cx.name.to_string(),
            op_type: cx.op_type().to_string(),
            what: "the weights (rearranged for the tensor engine at compile time)".into(),
            value: imp.graph.value(w).name.clone(),
        });
    }
    let xs = imp.ty(x).shape.clone();
    let ws = imp.ty(w).shape.clone();
    if xs.len() < 3 || xs.len() > MAX_SPATIAL + 2 || ws.len() != xs.len() {
        return Err(cx.shape_err(format!(
            "input {xs:?} and weights {ws:?} must both have rank 3 to {}",
            MAX_SPATIAL + 2
        )));
    }
    let n = xs.len() - 2;
    let sp = &xs[2..];
    let kernel = ws[2..].to_vec();
    if let Some(k) = cx.attrs.ints("kernel_shape")?
        && usizes(k) != kernel
    {
        return Err(cx.attr_err(format!(
            "kernel_shape {k:?} differs from the weights' spatial shape {kernel:?}"
        )));
    }
    if kernel.contains(&0) {
        return Err(cx.shape_err(format!("weights {ws:?} have an empty kernel")));
    }
    let strides = usizes(&per_axis(cx, "strides", n, 1, 1)?);
    let dilations = usizes(&per_axis(cx, "dilations", n, 1, 1)?);
    let group = usize::try_from(cx.attrs.int_or("group", 1)?)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| cx.attr_err("group must be positive"))?;
    let mode = auto_pad(cx)?;
    let (pads_begin, pads_end) = if !transpose {
        let (b, e) = forward_pads(cx, mode, sp, &kernel, &strides, &dilations)?;
        (
            b.iter().map(|&p| p as i64).collect(),
            e.iter().map(|&p| p as i64).collect(),
        )
    } else {
        let out_pad = per_axis(cx, "output_padding", n, 0, 0)?;
        let output_shape = match cx.attrs.ints("output_shape")? {
            // output_shape may list all dims or only the spatial ones.
            Some(o) if o.len() == n + 2 => Some(o[2..].to_vec()),
            Some(o) if o.len() == n => Some(o.to_vec()),
            Some(o) => {
                return Err(cx.attr_err(format!("output_shape {o:?} needs {n} spatial entries")));
            }
            None if matches!(mode, AutoPad::SameUpper | AutoPad::SameLower) => Some(
                (0..n)
                    .map(|a| (sp[a] * strides[a]) as i64)
                    .collect::<Vec<_>>(),
            ),
            None => None,
        };
        match output_shape {
            Some(out) => {
                let mut b = Vec::with_capacity(n);
                let mut e = Vec::with_capacity(n);
                for a in 0..n {
                    let full = strides[a] as i64 * (sp[a] as i64 - 1)
                        + out_pad[a]
                        + (kernel[a] as i64 - 1) * dilations[a] as i64
                        + 1;
                    let total = full - out[a];
                    let half = total.div_euclid(2);
                    let (pb, pe) = if mode == AutoPad::SameUpper {
                        (half, total - half)
                    } else {
                        (total - half, half)
                    };
                    b.push(pb);
                    e.push(pe - out_pad[a]);
                }
                (b, e)
            }
            None => {
                let pads = if mode == AutoPad::Valid {
                    vec![0; 2 * n]
                } else {
                    per_axis(cx, "pads", 2 * n, 0, 0)?
                };
                let e = (0..n).map(|a| pads[n + a] - out_pad[a]).collect();
                (pads[..n].to_vec(), e)
            }
        }
    };
    let spec = ConvSpec {
        transpose,
        strides,
        dilations,
        pads_begin,
        pads_end,
        group,
    };
    let mut ins = vec![x, w];
    ins.extend(bias);
    imp.emit(cx, cx.name, GraphOp::Conv(spec), &ins)
}

/// MaxPool, AveragePool, LpPool. `kernel_shape` is required; `dilations` and `ceil_mode` arrive
/// with the later opsets (absent means 1 and 0). MaxPool's optional second output (the
/// indices of the maxima) is built by [`max_pool_indices`].
fn pool(imp: &mut Importer, cx: &NodeCx, kind: PoolKind) -> Result<ValueId, ImportError> {
    inputs(cx, 1, 1)?;
    let indices = cx.proto.output.get(1).is_some_and(|o| !o.is_empty());
    if cx.proto.output.iter().skip(2).any(|o| !o.is_empty()) || (indices && kind != PoolKind::Max) {
        return Err(ImportError::Opset {
            detail: format!(
                "node \"{}\" ({}): only MaxPool has a second output (Indices)",
                cx.name,
                cx.op_type()
            ),
        });
    }
    let x = cx.input(0)?;
    let xs = imp.ty(x).shape.clone();
    if xs.len() < 3 || xs.len() > MAX_SPATIAL + 2 {
        return Err(cx.shape_err(format!(
            "input {xs:?} must have rank 3 to {}",
            MAX_SPATIAL + 2
        )));
    }
    let n = xs.len() - 2;
    let kernel = cx
        .attrs
        .ints("kernel_shape")?
        .ok_or_else(|| cx.attr_err("required attribute `kernel_shape` is missing"))?;
    if kernel.len() != n || kernel.iter().any(|&k| k < 1) {
        return Err(cx.attr_err(format!(
            "kernel_shape {kernel:?} must have {n} positive entries"
        )));
    }
    let kernel = usizes(kernel);
    let strides = usizes(&per_axis(cx, "strides", n, 1, 1)?);
    let dilations = usizes(&per_axis(cx, "dilations", n, 1, 1)?);
    let (pads_begin, pads_end) =
        forward_pads(cx, auto_pad(cx)?, &xs[2..], &kernel, &strides, &dilations)?;
    let spec = PoolSpec {
        kind,
        kernel,
        strides,
        dilations,
        pads_begin,
        pads_end,
        ceil_mode: cx.attrs.flag_or("ceil_mode", false)?,
    };
    if !indices {
        return imp.emit(cx, cx.name, GraphOp::Pool(spec), &[x]);
    }
    let argmax = max_pool_indices(imp, cx, &format!("{}/indices", cx.name), x, &spec)?;
    let y = imp.emit(cx, cx.name, GraphOp::Pool(spec), &[x])?;
    imp.extra_outputs = vec![argmax];
    Ok(y)
}

/// GlobalAveragePool / GlobalMaxPool: the mean / max over every spatial axis, kept as size 1.
fn global(imp: &mut Importer, cx: &NodeCx, kind: ReduceKind) -> Result<ValueId, ImportError> {
    inputs(cx, 1, 1)?;
    let x = cx.input(0)?;
    let rank = imp.ty(x).shape.len();
    if rank < 3 {
        return Err(cx.shape_err(format!("input of rank {rank}; expected at least 3")));
    }
    let spec = ReduceSpec {
        kind,
        axes: (2..rank).collect(),
        keepdims: true,
    };
    imp.emit(cx, cx.name, GraphOp::Reduce(spec), &[x])
}

/// LRN: `y = x / (bias + alpha / size * sum_{c' in window(c)} x[c']^2)^beta`, the window
/// `c - floor((size - 1) / 2) ..= c + ceil((size - 1) / 2)` clipped to the channels. The window
/// sum (with `alpha / size` folded in) is a 1x1 convolution of `x * x` whose `[C, C]` weights
/// are a band, so it runs on the tensor engine.
fn lrn(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    inputs(cx, 1, 1)?;
    let x = cx.input(0)?;
    let ty = imp.ty(x).clone();
    if ty.shape.len() < 3 || ty.shape.len() > MAX_SPATIAL + 2 || !ty.dtype.is_float() {
        return Err(cx.shape_err(format!(
            "input {ty} must be a float tensor of rank 3 to {}",
            MAX_SPATIAL + 2
        )));
    }
    let size = cx.attrs.int_required("size")?;
    if size < 1 {
        return Err(cx.attr_err(format!("size must be positive, got {size}")));
    }
    let alpha = f64::from(cx.attrs.float_or("alpha", 1e-4)?);
    let beta = f64::from(cx.attrs.float_or("beta", 0.75)?);
    let bias = f64::from(cx.attrs.float_or("bias", 1.0)?);
    let c = ty.shape[1];
    let n = ty.shape.len() - 2;
    let (lo, hi) = ((size - 1) / 2, (size - 1) - (size - 1) / 2);
    let mut band = vec![0.0; c * c];
    for o in 0..c {
        for i in 0..c {
            let d = i as i64 - o as i64;
            if d >= -lo && d <= hi {
                band[o * c + i] = alpha / size as f64;
            }
        }
    }
    let mut wshape = vec![c, c];
    wshape.extend(std::iter::repeat_n(1, n));
    let sub = |s: &str| format!("{}/{s}", cx.name);
    let w = imp.constant(&sub("band"), HostTensor::from_f64(ty.dtype, &wshape, &band));
    let sq = imp.emit(cx, &sub("square"), GraphOp::Binary(BinaryOp::Mul), &[x, x])?;
    let spec = ConvSpec {
        transpose: false,
        strides: vec![1; n],
        dilations: vec![1; n],
        pads_begin: vec![0; n],
        pads_end: vec![0; n],
        group: 1,
    };
    let sum = imp.emit(cx, &sub("window_sum"), GraphOp::Conv(spec), &[sq, w])?;
    let scalar = |imp: &mut Importer, s: &str, v: f64| {
        imp.constant(&sub(s), HostTensor::from_f64(ty.dtype, &[], &[v]))
    };
    let b = scalar(imp, "bias", bias);
    let base = imp.emit(cx, &sub("base"), GraphOp::Binary(BinaryOp::Add), &[sum, b])?;
    let e = scalar(imp, "beta", beta);
    let den = imp.emit(
        cx,
        &sub("denominator"),
        GraphOp::Binary(BinaryOp::Pow),
        &[base, e],
    )?;
    imp.emit(cx, cx.name, GraphOp::Binary(BinaryOp::Div), &[x, den])
}
