//! Import of RotaryEmbedding (opset 23) as MatMul and element-wise nodes.
//!
//! Per onnx/docs/Operators.md, each pair `(x1, x2)` of the first `rotary_embedding_dim` lanes of
//! a head (the two halves, or even and odd lanes when `interleaved`) becomes
//! `(cos x1 - sin x2, sin x1 + cos x2)`, with `cos`, `sin` taken from the caches at
//! `position_ids` (or given per batch and position when there are no ids). Without a slice or a
//! run-time gather this is written as `x * cos_full + (x @ R) * sin_full`:
//!
//! - `R` is a constant signed permutation with `(x @ R)` = `-x2` at `x1`'s lane and `x1` at
//!   `x2`'s lane (zero at the lanes that are not rotated);
//! - the caches are gathered by a one-hot MatMul (`Equal(position_ids, iota)` cast to float)
//!   and spread to both lanes of each pair by a constant 0/1 MatMul; `cos_full` is 1 and
//!   `sin_full` 0 at the lanes that are not rotated.
//!
//! Every MatMul here has one non-zero term per result, so it is exact, and each result lane is
//! the reference's `cos*x1 - sin*x2` (`a + (-b)` is `a - b` in IEEE arithmetic).

use super::ImportError;
use super::attention::{bin, cast, ew, node, reshape, sub};
use super::import::{Importer, NodeCx};
use tessera_ir::graph::{BinaryOp, ElementwiseOp, GraphOp, ValueId};
use tessera_ir::host::HostTensor;

/// RotaryEmbedding-23.
pub fn rotary_embedding(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let n_in = cx.proto.input.len();
    if !(3..=4).contains(&n_in) {
        return Err(cx.attr_err(format!("expects 3 or 4 inputs, the node lists {n_in}")));
    }
    let (x, cos, sin, pos) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.opt_input(3));
    let xt = imp.ty(x).clone();
    let dtype = xt.dtype;
    if !dtype.is_float() {
        return Err(cx.shape_err(format!("the input must be float, it is {dtype}")));
    }
    for (what, c) in [("cos_cache", cos), ("sin_cache", sin)] {
        if imp.ty(c).dtype != dtype {
            return Err(cx.shape_err(format!(
                "{what} is {} but the input is {dtype}",
                imp.ty(c).dtype
            )));
        }
    }
    let interleaved = cx.attrs.flag_or("interleaved", false)?;
    // The working view [B, H, S, D] (4-D input) or [B, S, H, D] (3-D input split in heads),
    // and where cos/sin ([B, S, D]) broadcast in it.
    let (x4, b, s, d, cos_view) = match xt.shape.as_slice() {
        &[b, h, s, d] => {
            if cx.attrs.has("num_heads") && cx.attrs.int_or("num_heads", 0)? != h as i64 {
                return Err(cx.attr_err(format!("num_heads does not match the input's {h} heads")));
            }
            (x, b, s, d, vec![b, 1, s, d])
        }
        &[b, s, hidden] => {
            let h = usize::try_from(cx.attrs.int_or("num_heads", 0)?)
                .ok()
                .filter(|&h| h > 0 && hidden.is_multiple_of(h))
                .ok_or_else(|| {
                    cx.attr_err(format!(
                        "3-D input needs num_heads dividing its hidden size {hidden}"
                    ))
                })?;
            let x4 = reshape(imp, cx, "heads", x, vec![b, s, h, hidden / h])?;
            (x4, b, s, hidden / h, vec![b, s, 1, hidden / h])
        }
        other => {
            return Err(cx.shape_err(format!("the input must be 3-D or 4-D, it is {other:?}")));
        }
    };
    let rot = match cx.attrs.int_or("rotary_embedding_dim", 0)? {
        0 => d,
        r => usize::try_from(r)
            .ok()
            .filter(|&r| r <= d && r.is_multiple_of(2))
            .ok_or_else(|| {
                cx.attr_err(format!(
                    "rotary_embedding_dim {r} must be even and at most the head size {d}"
                ))
            })?,
    };
    let half = rot / 2;
    let (cos, sin) = match pos {
        Some(p) => {
            let pt = imp.ty(p).clone();
            let ct = imp.ty(cos).clone();
            if pt.shape != [b, s] || !pt.dtype.is_integer() {
                return Err(cx.shape_err(format!(
                    "position_ids must be an integer tensor of shape [{b}, {s}], it is {pt}"
                )));
            }
            let [positions, _] = ct.shape[..] else {
                return Err(cx.shape_err(format!(
                    "with position_ids the caches must be 2-D, cos_cache is {:?}",
                    ct.shape
                )));
            };
            let p = reshape(imp, cx, "position_ids_bs1", p, vec![b, s, 1])?;
            let iota: Vec<f64> = (0..positions).map(|i| i as f64).collect();
            let iota = imp.constant(
                &sub(cx, "positions"),
                HostTensor::from_f64(pt.dtype, &[1, 1, positions], &iota),
            );
            let hot = ew(
                imp,
                cx,
                "position_one_hot",
                ElementwiseOp::Equal,
                &[p, iota],
            )?;
            let hot = cast(imp, cx, "position_one_hot_f", hot, dtype)?;
            let cos = node(imp, cx, "cos_at", GraphOp::MatMul, &[hot, cos])?;
            (cos, node(imp, cx, "sin_at", GraphOp::MatMul, &[hot, sin])?)
        }
        None => (cos, sin),
    };
    for (what, c) in [("cos_cache", cos), ("sin_cache", sin)] {
        let shape = &imp.ty(c).shape;
        if shape.as_slice() != [b, s, half] {
            return Err(cx.shape_err(format!(
                "{what} gives {shape:?} per position; [{b}, {s}, {half}] \
                 (rotary_embedding_dim / 2 per position) is needed"
            )));
        }
    }
    // Lane pairs (x1, x2) of the rotated lanes.
    let pair = |k: usize| {
        if interleaved {
            (2 * k, 2 * k + 1)
        } else {
            (k, k + half)
        }
    };
    let mut spread = vec![0.0; half * d];
    let mut signed_swap = vec![0.0; d * d];
    for k in 0..half {
        let (a, c) = pair(k);
        spread[k * d + a] = 1.0;
        spread[k * d + c] = 1.0;
        // (x @ R)[a] = -x[c], (x @ R)[c] = x[a]
        signed_swap[c * d + a] = -1.0;
        signed_swap[a * d + c] = 1.0;
    }
    let spread = imp.constant(
        &sub(cx, "spread"),
        HostTensor::from_f64(dtype, &[half, d], &spread),
    );
    let cos_full = node(imp, cx, "cos_full", GraphOp::MatMul, &[cos, spread])?;
    let sin_full = node(imp, cx, "sin_full", GraphOp::MatMul, &[sin, spread])?;
    let cos_full = if rot < d {
        let pass: Vec<f64> = (0..d).map(|j| if j < rot { 0.0 } else { 1.0 }).collect();
        let pass = imp.constant(
            &sub(cx, "pass_lanes"),
            HostTensor::from_f64(dtype, &[d], &pass),
        );
        bin(imp, cx, "cos_full_pass", BinaryOp::Add, cos_full, pass)?
    } else {
        cos_full
    };
    let cos_full = reshape(imp, cx, "cos_view", cos_full, cos_view.clone())?;
    let sin_full = reshape(imp, cx, "sin_view", sin_full, cos_view)?;
    let shape4 = imp.ty(x4).shape.clone();
    let rows = shape4[..3].iter().product();
    let flat = reshape(imp, cx, "rows", x4, vec![rows, d])?;
    let r = imp.constant(
        &sub(cx, "signed_swap"),
        HostTensor::from_f64(dtype, &[d, d], &signed_swap),
    );
    let swapped = node(imp, cx, "swapped", GraphOp::MatMul, &[flat, r])?;
    let swapped = reshape(imp, cx, "swapped4", swapped, shape4)?;
    let xc = bin(imp, cx, "x_cos", BinaryOp::Mul, x4, cos_full)?;
    let xs = bin(imp, cx, "swapped_sin", BinaryOp::Mul, swapped, sin_full)?;
    let y = bin(imp, cx, "rotated", BinaryOp::Add, xc, xs)?;
    reshape(imp, cx, "y", y, xt.shape)
}
