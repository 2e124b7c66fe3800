//! Import of Hardmax: 1 at the first maximum along an axis, 0 elsewhere.
//!
//! Per onnx/docs/Operators.md (Hardmax-13): one `axis` (default -1); before opset 13
//! (Hardmax-1/-11) the input is coerced to 2-D at `axis` (default 1) and each row gets one 1.
//! It is ArgMax (first index of ties, kept dims), cast to the input's float type (exact: indices
//! are far below 2^24), compared with an iota `[0, 1, ..., L-1]` along the axis, and the bool
//! cast back to the input type.

use super::ImportError;
use super::fold;
use super::import::{Importer, NodeCx};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{ElementwiseOp, GraphOp, ReduceKind, ReduceSpec, ValueId};
use tessera_ir::host::HostTensor;

/// Hardmax along `axis` of `x`, ending in a node named `name`.
fn hardmax_along(
    imp: &mut Importer,
    cx: &NodeCx,
    name: &str,
    x: ValueId,
    axis: usize,
) -> Result<ValueId, ImportError> {
    let ty = imp.ty(x).clone();
    let sub = |step: &str| format!("{}/{step}", cx.name);
    let spec = ReduceSpec {
        kind: ReduceKind::ArgMax { last: false },
        axes: vec![axis],
        keepdims: true,
    };
    let idx = imp.emit(cx, &sub("argmax"), GraphOp::Reduce(spec), &[x])?;
    let idx = imp.emit(cx, &sub("index"), GraphOp::Cast { to: ty.dtype }, &[idx])?;
    let len = ty.shape[axis];
    let mut iota_shape = vec![1; ty.shape.len() - axis];
    iota_shape[0] = len;
    let iota: Vec<f64> = (0..len).map(|i| i as f64).collect();
    let iota = imp.constant(
        &sub("iota"),
        HostTensor::from_f64(ty.dtype, &iota_shape, &iota),
    );
    let hit = imp.emit(
        cx,
        &sub("is_max"),
        GraphOp::Elementwise(ElementwiseOp::Equal),
        &[idx, iota],
    )?;
    imp.emit(cx, name, GraphOp::Cast { to: ty.dtype }, &[hit])
}

/// Hardmax (opsets 1, 11, 13).
pub fn hardmax(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let n = cx.proto.input.len();
    if n != 1 {
        return Err(cx.attr_err(format!("expects 1 input, the node lists {n}")));
    }
    let x = cx.input(0)?;
    let ty = imp.ty(x).clone();
    if !matches!(ty.dtype, DType::F32 | DType::Bf16) {
        return Err(ImportError::Type {
            what: format!("node \"{}\" (Hardmax)", cx.name),
            elem_type: ty.dtype.to_string(),
            detail: " (ArgMax and the compare run on f32 or bf16 here)".into(),
        });
    }
    let rank = ty.shape.len();
    if rank == 0 {
        return Err(cx.shape_err("Hardmax needs an input of rank at least 1"));
    }
    if ty.elems() == 0 {
        return imp.emit(cx, cx.name, GraphOp::Identity, &[x]);
    }
    let default = if imp.opset >= 13 { -1 } else { 1 };
    let a = cx.attrs.int_or("axis", default)?;
    let axis = fold::normalize_axis(a, rank)
        .ok_or_else(|| cx.attr_err(format!("axis {a} is out of range for rank {rank}")))?;
    if imp.opset >= 13 || axis + 1 == rank {
        return hardmax_along(imp, cx, cx.name, x, axis);
    }
    let flat = fold::flatten_shape(&ty.shape, axis as i64).map_err(|e| cx.shape_err(e))?;
    let sub = |step: &str| format!("{}/{step}", cx.name);
    let two_d = imp.emit(cx, &sub("to_2d"), GraphOp::Reshape { shape: flat }, &[x])?;
    let y = hardmax_along(imp, cx, &sub("rows"), two_d, 1)?;
    imp.emit(cx, cx.name, GraphOp::Reshape { shape: ty.shape }, &[y])
}

#[cfg(test)]
mod tests {
    use super::super::resize::tests::{attr_i, run_node};
    use super::*;

    #[test]
    fn first_maximum_wins_and_old_opsets_flatten() {
        // Rows [1, 3, 3] and [2, 0, 1]: ties go to the first index.
        let x = [1., 3., 3., 2., 0., 1.];
        let y = run_node(
            "Hardmax",
            13,
            vec![],
            &["x"],
            &[("x", DType::F32, &[2, 3], &x)],
            vec![],
        )
        .unwrap();
        assert_eq!(y.to_f64_vec(), [0., 1., 0., 1., 0., 0.]);
        // Hardmax-11 with axis 0 flattens [2, 3] to one row of 6: one 1 at the first 3.
        let y = run_node(
            "Hardmax",
            11,
            vec![attr_i("axis", 0)],
            &["x"],
            &[("x", DType::F32, &[2, 3], &x)],
            vec![],
        )
        .unwrap();
        assert_eq!(y.to_f64_vec(), [0., 1., 0., 0., 0., 0.]);
    }
}
