//! MaxPool's optional second output, `Indices` (onnx/docs/Operators.md, MaxPool-8 and later):
//! for each output element, the flattened index into `X` of the window's maximum.
//!
//! The index is the one of the ONNX reference (onnx/reference/ops/op_max_pool.py): padding is
//! never a candidate, the first valid tap of the window is taken first, and a later tap replaces
//! it only when strictly greater, so ties keep the first tap in row-major window order.
//! `storage_order` 0 flattens the spatial axes row-major, 1 column-major; the `(n, c)` offset
//! `(n C + c) * prod(spatial)` is added in both.
//!
//! It is spelled with graph operators, one step per window tap on the vector engine: the tap's
//! values are a strided Slice of `X` (padded with -inf where windows reach into the padding),
//! its candidate indices a constant computed here, and a compare (`Greater`, or'ed with a
//! constant "first valid tap" mask where padding makes the first tap differ) drives two
//! `Where` selects for the running maximum and its index. Indices are carried in f32, exact
//! because every index is below 2^24 (checked), and cast to int64 at the end.

use super::ImportError;
use super::import::{Importer, NodeCx};
use tessera_ir::dtype::DType;
use tessera_ir::graph::movement::{AxisSlice, MovementOp, PadMode};
use tessera_ir::graph::{ElementwiseOp, GraphOp, PoolSpec, ValueId};
use tessera_ir::host::HostTensor;

/// Largest element count of `X` whose indices f32 holds exactly.
const EXACT_F32_INDICES: usize = 1 << 24;

/// The Indices output of a MaxPool of `x` with `spec`, ending in a node named `name`.
pub fn max_pool_indices(
    imp: &mut Importer,
    cx: &NodeCx,
    name: &str,
    x: ValueId,
    spec: &PoolSpec,
) -> Result<ValueId, ImportError> {
    let ty = imp.ty(x).clone();
    let storage_order = cx.attrs.int_or("storage_order", 0)?;
    if !(0..=1).contains(&storage_order) {
        return Err(cx.attr_err(format!("storage_order {storage_order} must be 0 or 1")));
    }
    if !matches!(ty.dtype, DType::F32 | DType::F16 | DType::Bf16) {
        return Err(ImportError::Type {
            what: format!("node \"{}\" ({})", cx.name, cx.op_type()),
            elem_type: ty.dtype.to_string(),
            detail:
                " (the Indices output compares in f32, which holds only float inputs exactly here)"
                    .into(),
        });
    }
    if ty.elems() >= EXACT_F32_INDICES {
        return Err(cx.shape_err(format!(
            "input {:?} has {} elements; the Indices output needs fewer than 2^24 (f32-exact)",
            ty.shape,
            ty.elems()
        )));
    }
    let sp = &ty.shape[2..];
    let out_sp = spec
        .out_spatial(sp)
        .map_err(|e| cx.shape_err(e.to_string()))?;
    let (batch, chans) = (ty.shape[0], ty.shape[1]);
    let mut out_shape = vec![batch, chans];
    out_shape.extend(&out_sp);
    let out_elems: usize = out_shape.iter().product();
    if out_elems == 0 {
        return Err(cx.shape_err(format!(
            "output {out_shape:?} is empty; the Indices output needs at least one window"
        )));
    }
    let sub = |step: String| format!("{}/{step}", cx.name);

    let mut xv = x;
    if ty.dtype != DType::F32 {
        xv = imp.emit(
            cx,
            &sub("f32".into()),
            GraphOp::Cast { to: DType::F32 },
            &[xv],
        )?;
    }
    // Padding so every tap's strided slice stays inside: begin pads as given, end pads as far as
    // the last window reaches (ceil_mode may reach past the declared end pads).
    let pads: Vec<(i64, i64)> = (0..sp.len())
        .map(|a| {
            let span =
                (out_sp[a] - 1) * spec.strides[a] + (spec.kernel[a] - 1) * spec.dilations[a] + 1;
            let after = span.saturating_sub(spec.pads_begin[a] + sp[a]);
            (spec.pads_begin[a] as i64, after as i64)
        })
        .collect();
    if pads.iter().any(|&(b, e)| b > 0 || e > 0) {
        let mut all = vec![(0, 0), (0, 0)];
        all.extend(&pads);
        let fill = imp.constant(
            &sub("neg_inf".into()),
            HostTensor::from_f64(DType::F32, &[], &[f64::NEG_INFINITY]),
        );
        let op = MovementOp::Pad {
            mode: PadMode::Constant,
            pads: all,
        };
        xv = imp.emit(
            cx,
            &sub("padded".into()),
            GraphOp::Movement(op),
            &[xv, fill],
        )?;
    }

    // Flattened-index weight of each spatial axis.
    let n = sp.len();
    let weight: Vec<usize> = (0..n)
        .map(|a| {
            if storage_order == 0 {
                sp[a + 1..].iter().product()
            } else {
                sp[..a].iter().product()
            }
        })
        .collect();
    let plane: usize = sp.iter().product();
    let taps: usize = spec.kernel.iter().product();
    // seen[e]: some earlier tap of output element e was a valid (non-padding) position.
    let mut seen = vec![false; out_elems];
    let mut best: Option<(ValueId, ValueId)> = None;
    for tap in 0..taps {
        let t = unflatten(tap, &spec.kernel);
        let mut axes = vec![
            AxisSlice {
                start: 0,
                step: 1,
                len: batch,
            },
            AxisSlice {
                start: 0,
                step: 1,
                len: chans,
            },
        ];
        axes.extend((0..n).map(|a| AxisSlice {
            start: t[a] * spec.dilations[a],
            step: spec.strides[a] as i64,
            len: out_sp[a],
        }));
        let values = imp.emit(
            cx,
            &sub(format!("tap{tap}")),
            GraphOp::Movement(MovementOp::Slice(axes)),
            &[xv],
        )?;
        let mut index = vec![0.0; out_elems];
        let mut first = vec![false; out_elems];
        for (e, (ix, fi)) in index.iter_mut().zip(first.iter_mut()).enumerate() {
            let o = unflatten(e, &out_shape);
            let mut flat = (o[0] * chans + o[1]) * plane;
            let mut valid = true;
            for a in 0..n {
                let h = (o[a + 2] * spec.strides[a] + t[a] * spec.dilations[a]) as i64
                    - spec.pads_begin[a] as i64;
                if h < 0 || h >= sp[a] as i64 {
                    valid = false;
                } else {
                    flat += h as usize * weight[a];
                }
            }
            if valid {
                *ix = flat as f64;
                *fi = !seen[e];
                seen[e] = true;
            }
        }
        let index = imp.constant(
            &sub(format!("tap{tap}_index")),
            HostTensor::from_f64(DType::F32, &out_shape, &index),
        );
        let Some((max, idx)) = best else {
            best = Some((values, index));
            continue;
        };
        let mut take = imp.emit(
            cx,
            &sub(format!("tap{tap}_greater")),
            GraphOp::Elementwise(ElementwiseOp::Greater),
            &[values, max],
        )?;
        // Where tap 0 was padding, the first valid tap is taken whatever it holds.
        if first.iter().any(|&f| f) {
            let mask: Vec<f64> = first.iter().map(|&f| f64::from(u8::from(f))).collect();
            let mask = imp.constant(
                &sub(format!("tap{tap}_first")),
                HostTensor::from_f64(DType::Bool, &out_shape, &mask),
            );
            take = imp.emit(
                cx,
                &sub(format!("tap{tap}_take")),
                GraphOp::Elementwise(ElementwiseOp::Or),
                &[take, mask],
            )?;
        }
        let max = imp.emit(
            cx,
            &sub(format!("tap{tap}_max")),
            GraphOp::Elementwise(ElementwiseOp::Where),
            &[take, values, max],
        )?;
        let idx = imp.emit(
            cx,
            &sub(format!("tap{tap}_argmax")),
            GraphOp::Elementwise(ElementwiseOp::Where),
            &[take, index, idx],
        )?;
        best = Some((max, idx));
    }
    let Some((_, idx)) = best else {
        return Err(cx.attr_err("kernel_shape has no taps"));
    };
    imp.emit(cx, name, GraphOp::Cast { to: DType::I64 }, &[idx])
}

/// Row-major multi-index of `flat` in `shape`.
fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        idx[i] = flat % d.max(1);
        flat /= d.max(1);
    }
    idx
}
