//! Import of the scans CumSum (opset 11) and CumProd (opset 26).
//!
//! Per onnx/docs/Operators.md: both take `x` and a scalar `axis` input (needed at compile time
//! here), and the attributes `exclusive` (leave out the element itself, so the first result is
//! the identity, 0 or 1) and `reverse` (accumulate from the end). Output position `i` combines
//! the input positions `j` of a constant 0/1 mask `M[i, j]`: `j <= i` (`j < i` when exclusive),
//! mirrored when reversed.
//!
//! CumSum on floats is then `M . x` along the axis, one matmul with a triangular matrix on the
//! tensor engine (each sum is rounded once, not step by step). CumProd has no matmul form: it is
//! `prod_j where(M[i, j], x[j], 1)`, a `Where` over the `[.., L, L, ..]` broadcast and a
//! ReduceProd, `O(L^2)` elements, fine for the short axes scans are used on. Integer scans
//! must be exact and neither the tensor engine (fp32 accumulation) nor the reductions (fp32
//! tiles) are, so integer inputs are refused with that reason.

use super::ImportError;
use super::fold;
use super::import::{Importer, NodeCx};
use super::ops::const_ints;
use super::resize::{AxisWeights, matmul_along_axis};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{ElementwiseOp, GraphOp, ReduceKind, ReduceSpec, ValueId};
use tessera_ir::host::HostTensor;

/// The scan mask: `m[i * len + j]` is 1 when output `i` includes input `j`.
pub fn scan_mask(len: usize, exclusive: bool, reverse: bool) -> Vec<f64> {
    let mut m = vec![0.0; len * len];
    for i in 0..len {
        for j in 0..len {
            let (lo, hi) = if reverse { (i, j) } else { (j, i) };
            if lo < hi || (lo == hi && !exclusive) {
                m[i * len + j] = 1.0;
            }
        }
    }
    m
}

struct Scan {
    x: ValueId,
    axis: usize,
    exclusive: bool,
    reverse: bool,
}

fn scan_inputs(imp: &Importer, cx: &NodeCx, what: &str) -> Result<Scan, ImportError> {
    let n = cx.proto.input.len();
    if n != 2 {
        return Err(cx.attr_err(format!("expects 2 inputs, the node lists {n}")));
    }
    let x = cx.input(0)?;
    let dtype = imp.ty(x).dtype;
    if !matches!(dtype, DType::F32 | DType::Bf16) {
        return Err(ImportError::Type {
            what: format!("node \"{}\" ({})", cx.name, cx.op_type()),
            elem_type: dtype.to_string(),
            detail: format!(
                " ({what} is computed in fp32 on the engines, which is exact only for f32 and \
                 bf16 inputs; integer scans need an exact integer path tessera does not have)"
            ),
        });
    }
    let axis = const_ints(imp, cx, cx.input(1)?, "the axis input")?;
    let rank = imp.ty(x).shape.len();
    let &[a] = axis.as_slice() else {
        return Err(cx.shape_err(format!("axis must hold one value, it holds {}", axis.len())));
    };
    let axis = fold::normalize_axis(a, rank)
        .ok_or_else(|| cx.attr_err(format!("axis {a} is out of range for rank {rank}")))?;
    Ok(Scan {
        x,
        axis,
        exclusive: cx.attrs.flag_or("exclusive", false)?,
        reverse: cx.attrs.flag_or("reverse", false)?,
    })
}

/// CumSum: a matmul with the triangular scan mask along the axis.
pub fn cumsum(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let s = scan_inputs(imp, cx, "CumSum")?;
    let len = imp.ty(s.x).shape[s.axis];
    if imp.ty(s.x).elems() == 0 {
        return imp.emit(cx, cx.name, GraphOp::Identity, &[s.x]);
    }
    let weights = AxisWeights {
        w: scan_mask(len, s.exclusive, s.reverse),
        bias: None,
    };
    matmul_along_axis(imp, cx, cx.name, s.x, s.axis, &weights)
}

/// CumProd: `where(mask, x, 1)` broadcast to `[pre, L, L, post]`, then a product over the
/// second `L` (the inputs `j`).
pub fn cumprod(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let s = scan_inputs(imp, cx, "CumProd")?;
    let ty = imp.ty(s.x).clone();
    if ty.elems() == 0 {
        return imp.emit(cx, cx.name, GraphOp::Identity, &[s.x]);
    }
    let len = ty.shape[s.axis];
    let pre: usize = ty.shape[..s.axis].iter().product();
    let post: usize = ty.shape[s.axis + 1..].iter().product();
    let sub = |step: &str| format!("{}/{step}", cx.name);
    let x4 = imp.emit(
        cx,
        &sub("spread"),
        GraphOp::Reshape {
            shape: vec![pre, 1, len, post],
        },
        &[s.x],
    )?;
    let mask = scan_mask(len, s.exclusive, s.reverse);
    let mask = HostTensor::from_f64(DType::Bool, &[len, len, 1], &mask);
    let mask = imp.constant(&sub("mask"), mask);
    let one = imp.constant(&sub("one"), HostTensor::from_f64(ty.dtype, &[], &[1.0]));
    let picked = imp.emit(
        cx,
        &sub("where"),
        GraphOp::Elementwise(ElementwiseOp::Where),
        &[mask, x4, one],
    )?;
    let spec = ReduceSpec {
        kind: ReduceKind::Prod,
        axes: vec![2],
        keepdims: false,
    };
    let y = imp.emit(cx, &sub("prod"), GraphOp::Reduce(spec), &[picked])?;
    imp.emit(cx, cx.name, GraphOp::Reshape { shape: ty.shape }, &[y])
}

#[cfg(test)]
mod tests {
    use super::super::resize::tests::{attr_i, init_i64, run_node};
    use super::*;

    fn scan(op: &str, exclusive: i64, reverse: i64, dtype: DType) -> Result<Vec<f64>, ImportError> {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = run_node(
            op,
            26,
            vec![attr_i("exclusive", exclusive), attr_i("reverse", reverse)],
            &["x", "axis"],
            &[("x", dtype, &[5], &x)],
            vec![init_i64("axis", &[], &[0])],
        )?;
        Ok(y.to_f64_vec())
    }

    #[test]
    fn cumsum_and_cumprod_of_one_to_five() {
        // Running sums and products of 1..5, hand-computed: forward inclusive, exclusive
        // (shifted right, identity first), reverse (from the end).
        assert_eq!(
            scan("CumSum", 0, 0, DType::F32).unwrap(),
            [1., 3., 6., 10., 15.]
        );
        assert_eq!(
            scan("CumSum", 1, 0, DType::F32).unwrap(),
            [0., 1., 3., 6., 10.]
        );
        assert_eq!(
            scan("CumSum", 0, 1, DType::F32).unwrap(),
            [15., 14., 12., 9., 5.]
        );
        assert_eq!(
            scan("CumSum", 1, 1, DType::F32).unwrap(),
            [14., 12., 9., 5., 0.]
        );
        assert_eq!(
            scan("CumProd", 0, 0, DType::F32).unwrap(),
            [1., 2., 6., 24., 120.]
        );
        assert_eq!(
            scan("CumProd", 1, 0, DType::F32).unwrap(),
            [1., 1., 2., 6., 24.]
        );
        assert_eq!(
            scan("CumProd", 1, 1, DType::F32).unwrap(),
            [120., 60., 20., 5., 1.]
        );
    }

    #[test]
    fn integer_scans_are_refused_with_the_reason() {
        let e = scan("CumSum", 0, 0, DType::I32).unwrap_err();
        assert!(matches!(e, ImportError::Type { .. }), "{e}");
        assert!(e.to_string().contains("exact"), "{e}");
    }

    #[test]
    fn scan_masks_are_the_four_triangles() {
        // Rows are outputs, columns inputs: inclusive forward is the lower triangle with the
        // diagonal; exclusive drops the diagonal; reverse mirrors to the upper triangle.
        assert_eq!(
            scan_mask(3, false, false),
            [1., 0., 0., 1., 1., 0., 1., 1., 1.]
        );
        assert_eq!(
            scan_mask(3, true, false),
            [0., 0., 0., 1., 0., 0., 1., 1., 0.]
        );
        assert_eq!(
            scan_mask(3, false, true),
            [1., 1., 1., 0., 1., 1., 0., 0., 1.]
        );
        assert_eq!(
            scan_mask(3, true, true),
            [0., 1., 1., 0., 0., 1., 0., 0., 0.]
        );
    }
}
