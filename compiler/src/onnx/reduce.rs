//! Import of the reductions (`ReduceSum`, `ReduceMean`, ..., `ReduceSumSquare`) as
//! [`GraphOp::Reduce`].
//!
//! Per onnx/docs/Operators.md and Changelog.md: the axes are the `axes` attribute up to
//! ReduceSum-11 and ReduceX-13 for the others, and an optional second input from ReduceSum-13
//! and ReduceX-18, which also bring `noop_with_empty_axes` (empty axes then mean "no reduction"
//! instead of "every axis"). `keepdims` defaults to 1 throughout.

use super::ImportError;
use super::fold;
use super::import::{Importer, NodeCx};
use super::ops::const_ints;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{GraphOp, ReduceKind, ReduceSpec, ValueId};
use tessera_ir::host::HostTensor;

/// The reduction an ONNX operator names, if it is one.
pub fn reduce_kind(op_type: &str) -> Option<ReduceKind> {
    Some(match op_type {
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMean" => ReduceKind::Mean,
        "ReduceMax" => ReduceKind::Max,
        "ReduceMin" => ReduceKind::Min,
        "ReduceProd" => ReduceKind::Prod,
        "ReduceL1" => ReduceKind::L1,
        "ReduceL2" => ReduceKind::L2,
        "ReduceLogSum" => ReduceKind::LogSum,
        "ReduceLogSumExp" => ReduceKind::LogSumExp,
        "ReduceSumSquare" => ReduceKind::SumSquare,
        _ => return None,
    })
}

/// ArgMax / ArgMin: one `axis` (default 0), `keepdims` (default 1); `select_last_index`
/// (ArgMax-12+, default 0) picks the last of equal extremes. The result is int64.
pub fn arg_reduce(imp: &mut Importer, cx: &NodeCx, max: bool) -> Result<ValueId, ImportError> {
    let n_inputs = cx.proto.input.len();
    if n_inputs != 1 {
        return Err(cx.attr_err(format!("expects 1 input, the node lists {n_inputs}")));
    }
    let x = cx.input(0)?;
    let rank = imp.ty(x).shape.len();
    let a = cx.attrs.int_or("axis", 0)?;
    let axis = fold::normalize_axis(a, rank)
        .ok_or_else(|| cx.attr_err(format!("axis {a} is out of range for rank {rank}")))?;
    let last = imp.opset >= 12 && cx.attrs.flag_or("select_last_index", false)?;
    let kind = if max {
        ReduceKind::ArgMax { last }
    } else {
        ReduceKind::ArgMin { last }
    };
    let spec = ReduceSpec {
        kind,
        axes: vec![axis],
        keepdims: cx.attrs.flag_or("keepdims", true)?,
    };
    imp.emit(cx, cx.name, GraphOp::Reduce(spec), &[x])
}

/// Converts a `Reduce*` node.
pub fn reduce(imp: &mut Importer, cx: &NodeCx, kind: ReduceKind) -> Result<ValueId, ImportError> {
    let axes_input_from = if kind == ReduceKind::Sum { 13 } else { 18 };
    let n_inputs = cx.proto.input.len();
    let x = cx.input(0)?;
    let rank = imp.ty(x).shape.len();
    let keepdims = cx.attrs.flag_or("keepdims", true)?;
    let (axes, noop) = if imp.opset >= axes_input_from {
        if !(1..=2).contains(&n_inputs) {
            return Err(cx.attr_err(format!("expects 1 or 2 inputs, the node lists {n_inputs}")));
        }
        let axes = match cx.opt_input(1) {
            Some(v) => const_ints(imp, cx, v, "the axes input")?,
            None => Vec::new(),
        };
        (axes, cx.attrs.flag_or("noop_with_empty_axes", false)?)
    } else {
        if n_inputs != 1 {
            return Err(cx.attr_err(format!("expects 1 input, the node lists {n_inputs}")));
        }
        (
            cx.attrs
                .ints("axes")?
                .map(<[i64]>::to_vec)
                .unwrap_or_default(),
            false,
        )
    };
    if axes.is_empty() && noop {
        return imp.emit(cx, cx.name, GraphOp::Identity, &[x]);
    }
    let mut axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&a| {
                fold::normalize_axis(a, rank)
                    .ok_or_else(|| cx.attr_err(format!("axis {a} is out of range for rank {rank}")))
            })
            .collect::<Result<_, _>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    let spec = ReduceSpec {
        kind,
        axes,
        keepdims,
    };
    let x_ty = imp.ty(x).clone();
    if x_ty.elems() == 0 {
        // Every group is empty, so the result does not depend on the data: the reduction's
        // identity (ReduceX-18: 0 for sums, 1 for the product, -inf / +inf for max / min and
        // the log-sums), a constant.
        let out = spec.infer(&x_ty).map_err(|e| cx.shape_err(e.to_string()))?;
        let mut value = kind.combine(&[]);
        if out.dtype == DType::Bool && value.is_infinite() {
            // Over booleans the identities are false (max) and true (min).
            value = if value > 0.0 { 1.0 } else { 0.0 };
        }
        let t = HostTensor::from_f64(out.dtype, &out.shape, &vec![value; out.elems()]);
        return Ok(imp.constant(cx.name, t));
    }
    imp.emit(cx, cx.name, GraphOp::Reduce(spec), &[x])
}
