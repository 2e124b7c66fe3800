//! Graph operators, their attributes, and their shape rules ([`GraphOp::infer`]).
//!
//! Operators are normalised at import: attributes are resolved to concrete values (axes made
//! non-negative, shapes static), optional inputs are present or absent by position, and
//! value-dependent shape computations are folded away. The evaluator defines the numbers.

use super::TensorType;
use crate::dtype::DType;

/// Element-wise unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// max(x, 0)
    Relu,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// tanh x
    Tanh,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// sqrt x
    Sqrt,
    /// -x
    Neg,
    /// |x|
    Abs,
    /// 1 / x
    Reciprocal,
    /// erf x
    Erf,
}

impl UnaryOp {
    /// The ONNX operator name.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Relu => "Relu",
            UnaryOp::Sigmoid => "Sigmoid",
            UnaryOp::Tanh => "Tanh",
            UnaryOp::Exp => "Exp",
            UnaryOp::Log => "Log",
            UnaryOp::Sqrt => "Sqrt",
            UnaryOp::Neg => "Neg",
            UnaryOp::Abs => "Abs",
            UnaryOp::Reciprocal => "Reciprocal",
            UnaryOp::Erf => "Erf",
        }
    }
}

/// Element-wise binary operators with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b (integer division truncates toward zero)
    Div,
    /// a ^ b
    Pow,
    /// max(a, b)
    Max,
    /// min(a, b)
    Min,
}

impl BinaryOp {
    /// The ONNX operator name.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
            BinaryOp::Pow => "Pow",
            BinaryOp::Max => "Max",
            BinaryOp::Min => "Min",
        }
    }
}

/// A graph operator with its (normalised) attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum GraphOp {
    /// numpy `matmul`: 1-D operands are promoted and the added axis removed; leading (batch)
    /// axes broadcast.
    MatMul,
    /// `alpha * op(A) . op(B) + beta * C`, `op` transposing when asked; C (third input, optional)
    /// broadcasts to `[M, N]`.
    Gemm {
        /// Scale of the product.
        alpha: f64,
        /// Scale of C.
        beta: f64,
        /// Use A^T.
        trans_a: bool,
        /// Use B^T.
        trans_b: bool,
    },
    /// Element-wise binary operator with broadcasting.
    Binary(BinaryOp),
    /// Element-wise unary operator.
    Unary(UnaryOp),
    /// Softmax along one axis (opset-13 semantics; older forms are rewritten at import).
    Softmax {
        /// The axis, non-negative.
        axis: usize,
    },
    /// Same elements, new static shape.
    Reshape {
        /// The result shape.
        shape: Vec<usize>,
    },
    /// Permute axes: result axis i is input axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// The input, unchanged.
    Identity,
    /// `out[..., idx, ...] = data[..., indices[idx], ...]` along `axis`; negative indices count
    /// from the end.
    Gather {
        /// The axis of `data` indexed, non-negative.
        axis: usize,
    },
    /// Join inputs along `axis`.
    Concat {
        /// The axis, non-negative.
        axis: usize,
    },
    /// Convert to another element type (float to integer truncates toward zero).
    Cast {
        /// Target type.
        to: DType,
    },
    /// Other element-wise operators (predicates, logic, `Where`, operators with attributes).
    Elementwise(super::ElementwiseOp),
    /// A reduction over some axes (see [`super::reduce`]).
    Reduce(super::reduce::ReduceSpec),
    /// Data movement picking input elements axis by axis (see [`super::movement`]).
    Movement(super::movement::MovementOp),
    /// Conv or ConvTranspose (see [`super::conv`]).
    Conv(super::conv::ConvSpec),
    /// MaxPool, AveragePool or LpPool (see [`super::conv`]).
    Pool(super::conv::PoolSpec),
    /// An indexing operator with run-time indices (see [`super::index`]).
    Index(super::index::IndexOp),
    /// A running sum or product along one axis (see [`super::scan`]).
    Scan(super::scan::ScanSpec),
    /// A fused operator chosen by the optimiser (see [`super::fused`]).
    Fused(super::fused::FusedOp),
    /// An operator whose kernel the application registered (see [`super::custom`]).
    Custom(Box<super::custom::CustomOp>),
}

/// Why an operator cannot be applied to its operand types.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// Wrong number of operands.
    #[error("expects {expected} input(s), got {got}")]
    Arity {
        /// What the operator accepts.
        expected: &'static str,
        /// What it was given.
        got: usize,
    },
    /// Operand types that do not fit together.
    #[error("{0}")]
    Mismatch(String),
}

fn arity(
    inputs: &[&TensorType],
    lo: usize,
    hi: usize,
    expected: &'static str,
) -> Result<(), ShapeError> {
    if inputs.len() < lo || inputs.len() > hi {
        return Err(ShapeError::Arity {
            expected,
            got: inputs.len(),
        });
    }
    Ok(())
}

fn same_dtype(inputs: &[&TensorType]) -> Result<DType, ShapeError> {
    let d = inputs[0].dtype;
    if let Some(other) = inputs.iter().find(|t| t.dtype != d) {
        return Err(ShapeError::Mismatch(format!(
            "operand types differ: {} and {}",
            d, other.dtype
        )));
    }
    Ok(d)
}

/// numpy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ShapeError> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(ShapeError::Mismatch(format!(
                    "shapes {a:?} and {b:?} do not broadcast (axis {i}: {da} vs {db})"
                )));
            }
        };
    }
    Ok(out)
}

impl GraphOp {
    /// The operator's name as ONNX spells it.
    pub fn name(&self) -> &'static str {
        match self {
            GraphOp::MatMul => "MatMul",
            GraphOp::Gemm { .. } => "Gemm",
            GraphOp::Binary(b) => b.name(),
            GraphOp::Unary(u) => u.name(),
            GraphOp::Softmax { .. } => "Softmax",
            GraphOp::Reshape { .. } => "Reshape",
            GraphOp::Transpose { .. } => "Transpose",
            GraphOp::Identity => "Identity",
            GraphOp::Gather { .. } => "Gather",
            GraphOp::Concat { .. } => "Concat",
            GraphOp::Cast { .. } => "Cast",
            GraphOp::Elementwise(e) => e.name(),
            GraphOp::Reduce(r) => r.kind.name(),
            GraphOp::Movement(m) => m.name(),
            GraphOp::Conv(c) if c.transpose => "ConvTranspose",
            GraphOp::Conv(_) => "Conv",
            GraphOp::Pool(p) => p.name(),
            GraphOp::Index(op) => op.name(),
            GraphOp::Scan(s) => s.kind.name(),
            GraphOp::Fused(_) => "Fused",
            GraphOp::Custom(_) => "Custom",
        }
    }

    /// The result types for these operand types, or why they do not fit.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, ShapeError> {
        let one = |ty: TensorType| Ok(vec![ty]);
        match self {
            GraphOp::MatMul => {
                arity(inputs, 2, 2, "2")?;
                let dtype = same_dtype(inputs)?;
                one(TensorType {
                    dtype,
                    shape: matmul_shape(&inputs[0].shape, &inputs[1].shape)?,
                })
            }
            GraphOp::Gemm {
                trans_a, trans_b, ..
            } => {
                arity(inputs, 2, 3, "2 or 3")?;
                let dtype = same_dtype(inputs)?;
                let (a, b) = (&inputs[0].shape, &inputs[1].shape);
                if a.len() != 2 || b.len() != 2 {
                    return Err(ShapeError::Mismatch(format!(
                        "Gemm needs 2-D A and B, got {a:?} and {b:?}"
                    )));
                }
                let (m, ka) = if *trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
                let (kb, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
                if ka != kb {
                    return Err(ShapeError::Mismatch(format!(
                        "inner dimensions differ: A gives K={ka}, B gives K={kb}"
                    )));
                }
                if let Some(c) = inputs.get(2) {
                    let bc = broadcast_shapes(&c.shape, &[m, n])?;
                    if bc != [m, n] {
                        return Err(ShapeError::Mismatch(format!(
                            "C of shape {:?} does not broadcast to [{m}, {n}]",
                            c.shape
                        )));
                    }
                }
                one(TensorType {
                    dtype,
                    shape: vec![m, n],
                })
            }
            GraphOp::Binary(_) => {
                arity(inputs, 2, 2, "2")?;
                let dtype = same_dtype(inputs)?;
                one(TensorType {
                    dtype,
                    shape: broadcast_shapes(&inputs[0].shape, &inputs[1].shape)?,
                })
            }
            GraphOp::Reduce(r) => {
                arity(inputs, 1, 1, "1")?;
                one(r.infer(inputs[0])?)
            }
            GraphOp::Scan(s) => {
                arity(inputs, 1, 1, "1")?;
                one(s.infer(inputs[0])?)
            }
            GraphOp::Fused(f) => one(f.infer(inputs)?),
            GraphOp::Custom(c) => {
                if inputs.len() != c.inputs.len() {
                    return Err(ShapeError::Mismatch(format!(
                        "{} was imported with {} operands, not {}",
                        c.qualified(),
                        c.inputs.len(),
                        inputs.len()
                    )));
                }
                for (k, (got, want)) in inputs.iter().zip(&c.inputs).enumerate() {
                    if *got != want {
                        return Err(ShapeError::Mismatch(format!(
                            "{}: operand {k} is {}{:?}, but the node was imported with {}{:?}",
                            c.qualified(),
                            got.dtype,
                            got.shape,
                            want.dtype,
                            want.shape
                        )));
                    }
                }
                Ok(c.outputs.clone())
            }
            GraphOp::Unary(_) | GraphOp::Identity => {
                arity(inputs, 1, 1, "1")?;
                one(inputs[0].clone())
            }
            GraphOp::Softmax { axis } => {
                arity(inputs, 1, 1, "1")?;
                if *axis >= inputs[0].shape.len().max(1) {
                    return Err(ShapeError::Mismatch(format!(
                        "axis {axis} out of range for rank {}",
                        inputs[0].shape.len()
                    )));
                }
                one(inputs[0].clone())
            }
            GraphOp::Reshape { shape } => {
                arity(inputs, 1, 1, "1")?;
                let n: usize = shape.iter().product();
                if n != inputs[0].elems() {
                    return Err(ShapeError::Mismatch(format!(
                        "cannot reshape {:?} ({} elements) to {shape:?} ({n} elements)",
                        inputs[0].shape,
                        inputs[0].elems()
                    )));
                }
                one(TensorType {
                    dtype: inputs[0].dtype,
                    shape: shape.clone(),
                })
            }
            GraphOp::Transpose { perm } => {
                arity(inputs, 1, 1, "1")?;
                let s = &inputs[0].shape;
                let mut seen = vec![false; s.len()];
                if perm.len() != s.len()
                    || perm
                        .iter()
                        .any(|&p| p >= s.len() || std::mem::replace(&mut seen[p], true))
                {
                    return Err(ShapeError::Mismatch(format!(
                        "perm {perm:?} is not a permutation of the {} axes",
                        s.len()
                    )));
                }
                one(TensorType {
                    dtype: inputs[0].dtype,
                    shape: perm.iter().map(|&p| s[p]).collect(),
                })
            }
            GraphOp::Gather { axis } => {
                arity(inputs, 2, 2, "2")?;
                let (data, idx) = (&inputs[0], &inputs[1]);
                if *axis >= data.shape.len() {
                    return Err(ShapeError::Mismatch(format!(
                        "axis {axis} out of range for rank {}",
                        data.shape.len()
                    )));
                }
                if !matches!(idx.dtype, DType::I64 | DType::I32) {
                    return Err(ShapeError::Mismatch(format!(
                        "indices must be int32 or int64, got {}",
                        idx.dtype
                    )));
                }
                let mut shape = data.shape[..*axis].to_vec();
                shape.extend(&idx.shape);
                shape.extend(&data.shape[axis + 1..]);
                one(TensorType {
                    dtype: data.dtype,
                    shape,
                })
            }
            GraphOp::Concat { axis } => {
                if inputs.is_empty() {
                    return Err(ShapeError::Arity {
                        expected: "at least 1",
                        got: 0,
                    });
                }
                let dtype = same_dtype(inputs)?;
                let first = &inputs[0].shape;
                if *axis >= first.len() {
                    return Err(ShapeError::Mismatch(format!(
                        "axis {axis} out of range for rank {}",
                        first.len()
                    )));
                }
                let mut shape = first.clone();
                shape[*axis] = 0;
                for t in inputs {
                    let ok = t.shape.len() == first.len()
                        && t.shape
                            .iter()
                            .zip(first)
                            .enumerate()
                            .all(|(i, (a, b))| i == *axis || a == b);
                    if !ok {
                        return Err(ShapeError::Mismatch(format!(
                            "cannot concatenate {:?} with {:?} along axis {axis}",
                            first, t.shape
                        )));
                    }
                    shape[*axis] += t.shape[*axis];
                }
                one(TensorType { dtype, shape })
            }
            GraphOp::Elementwise(e) => one(e.infer(inputs)?),
            GraphOp::Movement(m) => one(m.infer(inputs)?),
            GraphOp::Conv(c) => one(c.infer(inputs)?),
            GraphOp::Pool(p) => {
                arity(inputs, 1, 1, "1")?;
                one(p.infer(inputs[0])?)
            }
            GraphOp::Index(op) => op.infer(inputs),
            GraphOp::Cast { to } => {
                arity(inputs, 1, 1, "1")?;
                one(TensorType {
                    dtype: *to,
                    shape: inputs[0].shape.clone(),
                })
            }
        }
    }
}

/// numpy `matmul` result shape.
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ShapeError> {
    if a.is_empty() || b.is_empty() {
        return Err(ShapeError::Mismatch(
            "MatMul operands must have rank >= 1".into(),
        ));
    }
    // Promote 1-D operands: [k] is [1, k] on the left and [k, 1] on the right.
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, ka) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if ka != kb {
        return Err(ShapeError::Mismatch(format!(
            "inner dimensions differ: {a:?} x {b:?} ({ka} vs {kb})"
        )));
    }
    let mut shape = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        shape.push(m);
    }
    if b.len() > 1 {
        shape.push(n);
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> TensorType {
        TensorType::new(DType::F32, shape)
    }

    #[test]
    fn matmul_shapes_follow_numpy() {
        assert_eq!(
            matmul_shape(&[2, 1, 5, 7], &[3, 7, 4]).unwrap(),
            vec![2, 3, 5, 4]
        );
        assert_eq!(matmul_shape(&[7], &[7, 4]).unwrap(), vec![4]);
        assert_eq!(matmul_shape(&[5, 7], &[7]).unwrap(), vec![5]);
        assert_eq!(matmul_shape(&[7], &[7]).unwrap(), Vec::<usize>::new());
        assert!(matmul_shape(&[3, 4], &[5, 6]).is_err());
    }

    #[test]
    fn gemm_and_broadcast_rules() {
        let g = GraphOp::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        };
        assert_eq!(
            g.infer(&[&t(&[53, 200]), &t(&[77, 200]), &t(&[77])])
                .unwrap()[0]
                .shape,
            vec![53, 77]
        );
        assert!(g.infer(&[&t(&[53, 200]), &t(&[200, 77])]).is_err());
        assert_eq!(
            broadcast_shapes(&[4, 1, 6], &[5, 1]).unwrap(),
            vec![4, 5, 6]
        );
        assert!(broadcast_shapes(&[3], &[4]).is_err());
    }

    #[test]
    fn data_movement_rules() {
        let tr = GraphOp::Transpose {
            perm: vec![2, 0, 1],
        };
        assert_eq!(tr.infer(&[&t(&[2, 3, 4])]).unwrap()[0].shape, vec![4, 2, 3]);
        assert!(
            GraphOp::Transpose {
                perm: vec![0, 0, 1]
            }
            .infer(&[&t(&[2, 3, 4])])
            .is_err()
        );
        let idx = TensorType::new(DType::I64, &[2, 2]);
        assert_eq!(
            GraphOp::Gather { axis: 1 }
                .infer(&[&t(&[3, 5, 7]), &idx])
                .unwrap()[0]
                .shape,
            vec![3, 2, 2, 7]
        );
        assert_eq!(
            GraphOp::Concat { axis: 0 }
                .infer(&[&t(&[2, 3]), &t(&[4, 3])])
                .unwrap()[0]
                .shape,
            vec![6, 3]
        );
        assert!(
            GraphOp::Reshape { shape: vec![5] }
                .infer(&[&t(&[2, 3])])
                .is_err()
        );
    }
}
