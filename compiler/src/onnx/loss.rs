//! Import of NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (both since opset 12) as
//! element-wise and reduction nodes.
//!
//! The target indices are a run-time input, so `input[n, target[n, d], d]` is computed, not
//! gathered: a one-hot `Equal(target[N, 1, D], iota[1, C, 1])` (false for the ignored index)
//! cast to float and scaled by `weight[c]` gives each element's weight `w[n, c, d]`; then
//! `loss[n, d] = -sum_c w * input` and `weight[target[n, d]] = sum_c w` (one non-zero term each,
//! so both are exact). Inputs `[N, C, d1, ..., dk]` are viewed as `[N, C, d1*...*dk]`.
//!
//! Per onnx/docs/Operators.md: `reduction="mean"` divides the summed loss by the sum of the
//! applied weights (ignored elements weigh 0); without `weight` and `ignore_index` that is the
//! plain mean. SoftmaxCrossEntropyLoss applies NegativeLogLikelihoodLoss to
//! `log_prob = LogSoftmax(scores, axis=1)`, its optional second output.

use super::ImportError;
use super::attention::{bin, cast, ew, node, reduce, reshape, sub};
use super::import::{Importer, NodeCx};
use tessera_ir::graph::{BinaryOp, ElementwiseOp, GraphOp, ReduceKind, UnaryOp, ValueId};
use tessera_ir::host::HostTensor;

/// How the per-element losses combine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

/// NegativeLogLikelihoodLoss-12/13/22.
pub fn nll_loss(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    loss(imp, cx, false)
}

/// SoftmaxCrossEntropyLoss-12/13; the second output is `log_prob`.
pub fn softmax_cross_entropy(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    loss(imp, cx, true)
}

fn loss(imp: &mut Importer, cx: &NodeCx, softmax: bool) -> Result<ValueId, ImportError> {
    let n_in = cx.proto.input.len();
    if !(2..=3).contains(&n_in) {
        return Err(cx.attr_err(format!("expects 2 or 3 inputs, the node lists {n_in}")));
    }
    let (x, target, weight) = (cx.input(0)?, cx.input(1)?, cx.opt_input(2));
    let xt = imp.ty(x).clone();
    let tt = imp.ty(target).clone();
    if !xt.dtype.is_float() {
        return Err(cx.shape_err(format!("the scores must be float, they are {}", xt.dtype)));
    }
    if !tt.dtype.is_integer() {
        return Err(cx.shape_err(format!(
            "the target must be an integer tensor, it is {}",
            tt.dtype
        )));
    }
    if xt.shape.len() < 2 {
        return Err(cx.shape_err("the scores must be [N, C] or [N, C, d1, ..., dk]"));
    }
    let (n, c) = (xt.shape[0], xt.shape[1]);
    let rest = &xt.shape[2..];
    let d: usize = rest.iter().product();
    let mut want_target = vec![n];
    want_target.extend_from_slice(rest);
    if tt.shape != want_target {
        return Err(cx.shape_err(format!(
            "the target has shape {:?}; scores {:?} need {want_target:?}",
            tt.shape, xt.shape
        )));
    }
    if let Some(w) = weight {
        let wt = imp.ty(w);
        if wt.shape != [c] || wt.dtype != xt.dtype {
            return Err(cx.shape_err(format!("weight must be {}[{c}], it is {wt}", xt.dtype)));
        }
    }
    let reduction = match cx.attrs.string("reduction")? {
        None | Some(b"mean") => Reduction::Mean,
        Some(b"sum") => Reduction::Sum,
        Some(b"none") => Reduction::None,
        Some(other) => {
            return Err(cx.attr_err(format!(
                "reduction must be none, sum or mean, got \"{}\"",
                String::from_utf8_lossy(other)
            )));
        }
    };
    let ignore = cx.attrs.int("ignore_index")?;
    let dtype = xt.dtype;

    let scores = if softmax {
        let lse = reduce(
            imp,
            cx,
            "logsumexp",
            ReduceKind::LogSumExp,
            vec![1],
            true,
            x,
        )?;
        let log_prob = bin(imp, cx, "log_prob", BinaryOp::Sub, x, lse)?;
        imp.extra_outputs = vec![log_prob];
        log_prob
    } else {
        x
    };
    let scores = reshape(imp, cx, "scores_ncd", scores, vec![n, c, d])?;
    let t = reshape(imp, cx, "target_n1d", target, vec![n, 1, d])?;
    let classes: Vec<f64> = (0..c).map(|i| i as f64).collect();
    let iota = imp.constant(
        &sub(cx, "classes"),
        HostTensor::from_f64(tt.dtype, &[1, c, 1], &classes),
    );
    let mut one_hot = ew(imp, cx, "one_hot", ElementwiseOp::Equal, &[t, iota])?;
    // An ignored index outside [0, C) matches no class already.
    if let Some(ii) = ignore.filter(|&ii| (0..c as i64).contains(&ii)) {
        let ii = imp.constant(
            &sub(cx, "ignore_index"),
            HostTensor::from_f64(tt.dtype, &[], &[ii as f64]),
        );
        let ignored = ew(imp, cx, "ignored", ElementwiseOp::Equal, &[t, ii])?;
        let kept = ew(imp, cx, "kept", ElementwiseOp::Not, &[ignored])?;
        one_hot = ew(
            imp,
            cx,
            "one_hot_kept",
            ElementwiseOp::And,
            &[one_hot, kept],
        )?;
    }
    let mut w = cast(imp, cx, "one_hot_f", one_hot, dtype)?;
    if let Some(weight) = weight {
        let weight = reshape(imp, cx, "weight_1c1", weight, vec![1, c, 1])?;
        w = bin(imp, cx, "weights", BinaryOp::Mul, w, weight)?;
    }
    let wx = bin(imp, cx, "weighted_scores", BinaryOp::Mul, w, scores)?;
    let picked = reduce(imp, cx, "picked", ReduceKind::Sum, vec![1], false, wx)?;
    let neg = GraphOp::Unary(UnaryOp::Neg);
    let all = vec![0, 1];
    match reduction {
        Reduction::None => {
            let l = node(imp, cx, "loss_nd", neg, &[picked])?;
            imp.emit(cx, cx.name, GraphOp::Reshape { shape: tt.shape }, &[l])
        }
        Reduction::Sum => {
            let s = reduce(imp, cx, "sum", ReduceKind::Sum, all, false, picked)?;
            imp.emit(cx, cx.name, neg, &[s])
        }
        Reduction::Mean if weight.is_none() && ignore.is_none() => {
            let m = reduce(imp, cx, "mean", ReduceKind::Mean, all, false, picked)?;
            imp.emit(cx, cx.name, neg, &[m])
        }
        Reduction::Mean => {
            let s = reduce(imp, cx, "sum", ReduceKind::Sum, all, false, picked)?;
            let total_w = reduce(
                imp,
                cx,
                "weight_sum",
                ReduceKind::Sum,
                vec![0, 1, 2],
                false,
                w,
            )?;
            let ns = node(imp, cx, "neg_sum", neg, &[s])?;
            imp.emit(cx, cx.name, GraphOp::Binary(BinaryOp::Div), &[ns, total_w])
        }
    }
}
