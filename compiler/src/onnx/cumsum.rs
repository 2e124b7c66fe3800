//! Import of the scans CumSum (opset 11) and CumProd (opset 26).
//!
//! Per onnx/docs/Operators.md: both take `x` and a scalar `axis` input (needed at compile time
//! here), and the attributes `exclusive` (leave out the element itself, so the first result is
//! the identity, 0 or 1) and `reverse` (accumulate from the end).
//!
//! CumSum on f32 and bf16 is a matmul on the tensor engine: output position `i` sums the input
//! positions `j` of a constant 0/1 mask `M[i, j]` (`j <= i`, `j < i` when exclusive, mirrored
//! when reversed), so the scan is `M . x` along the axis (each sum rounded once, not step by
//! step). Integer CumSum must be exact, which fp32 accumulation is not, and CumProd has no
//! matmul form: both become [`GraphOp::Scan`], a step-per-column scan on the vector engine in
//! integer tiles (exact) or f32 tiles.

use super::ImportError;
use super::fold;
use super::import::{Importer, NodeCx};
use super::ops::const_ints;
use super::resize::{AxisWeights, matmul_along_axis};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{GraphOp, ScanKind, ScanSpec, ValueId};

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
    spec: ScanSpec,
}

fn scan_inputs(imp: &Importer, cx: &NodeCx, kind: ScanKind) -> Result<Scan, ImportError> {
    let n = cx.proto.input.len();
    if n != 2 {
        return Err(cx.attr_err(format!("expects 2 inputs, the node lists {n}")));
    }
    let x = cx.input(0)?;
    let dtype = imp.ty(x).dtype;
    if dtype == DType::Bool {
        return Err(ImportError::Type {
            what: format!("node \"{}\" ({})", cx.name, cx.op_type()),
            elem_type: dtype.to_string(),
            detail: " (scans take numeric tensors)".into(),
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
        spec: ScanSpec {
            kind,
            axis,
            exclusive: cx.attrs.flag_or("exclusive", false)?,
            reverse: cx.attrs.flag_or("reverse", false)?,
        },
    })
}

/// CumSum: a matmul with the triangular scan mask along the axis for f32 and bf16, else an
/// exact [`GraphOp::Scan`].
pub fn cumsum(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let s = scan_inputs(imp, cx, ScanKind::Sum)?;
    let ty = imp.ty(s.x).clone();
    if ty.elems() == 0 {
        return imp.emit(cx, cx.name, GraphOp::Identity, &[s.x]);
    }
    if !matches!(ty.dtype, DType::F32 | DType::Bf16) {
        return imp.emit(cx, cx.name, GraphOp::Scan(s.spec), &[s.x]);
    }
    let len = ty.shape[s.spec.axis];
    let weights = AxisWeights {
        w: scan_mask(len, s.spec.exclusive, s.spec.reverse),
        bias: None,
    };
    matmul_along_axis(imp, cx, cx.name, s.x, s.spec.axis, &weights)
}

/// CumProd: a [`GraphOp::Scan`] (products have no matmul form).
pub fn cumprod(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let s = scan_inputs(imp, cx, ScanKind::Prod)?;
    if imp.ty(s.x).elems() == 0 {
        return imp.emit(cx, cx.name, GraphOp::Identity, &[s.x]);
    }
    imp.emit(cx, cx.name, GraphOp::Scan(s.spec), &[s.x])
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
    fn integer_scans_go_through_the_scan_operator() {
        // 1..5 in int32 give the same running sums, through the Scan operator.
        assert_eq!(
            scan("CumSum", 0, 0, DType::I32).unwrap(),
            [1., 3., 6., 10., 15.]
        );
        assert_eq!(
            scan("CumProd", 0, 1, DType::I32).unwrap(),
            [120., 120., 60., 20., 5.]
        );
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
