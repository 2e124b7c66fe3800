//! Import of the activations Swish (opset 24) and ThresholdedRelu (opset 10) as a few
//! element-wise nodes, per their entries in onnx/docs/Operators.md.

use super::ImportError;
use super::attention::{bin, ew, node, scalar};
use super::import::{Importer, NodeCx};
use tessera_ir::graph::{BinaryOp, ElementwiseOp, GraphOp, UnaryOp, ValueId};

fn float_x(imp: &Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let n = cx.proto.input.len();
    if n != 1 {
        return Err(cx.attr_err(format!("expects 1 input, the node lists {n}")));
    }
    let x = cx.input(0)?;
    let dtype = imp.ty(x).dtype;
    if !dtype.is_float() {
        return Err(cx.shape_err(format!("expects a float tensor, got {dtype}")));
    }
    Ok(x)
}

/// Swish-24: `x * sigmoid(alpha * x)`, `alpha` 1 by default.
pub fn swish(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let x = float_x(imp, cx)?;
    let alpha = f64::from(cx.attrs.float_or("alpha", 1.0)?);
    let ax = if alpha == 1.0 {
        x
    } else {
        let a = scalar(imp, cx, "alpha", imp.ty(x).dtype, alpha);
        bin(imp, cx, "alpha_x", BinaryOp::Mul, x, a)?
    };
    let s = node(imp, cx, "sigmoid", GraphOp::Unary(UnaryOp::Sigmoid), &[ax])?;
    imp.emit(cx, cx.name, GraphOp::Binary(BinaryOp::Mul), &[x, s])
}

/// ThresholdedRelu-10: `x` where `x > alpha`, else 0; `alpha` 1 by default.
pub fn thresholded_relu(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let x = float_x(imp, cx)?;
    let dtype = imp.ty(x).dtype;
    let alpha = f64::from(cx.attrs.float_or("alpha", 1.0)?);
    let a = scalar(imp, cx, "alpha", dtype, alpha);
    let above = ew(imp, cx, "above", ElementwiseOp::Greater, &[x, a])?;
    let zero = scalar(imp, cx, "zero", dtype, 0.0);
    imp.emit(
        cx,
        cx.name,
        GraphOp::Elementwise(ElementwiseOp::Where),
        &[above, x, zero],
    )
}
