//! The reference evaluator: the meaning of every [`GraphOp`], on ndarray.
//!
//! Values are held as `ArrayD<f64>` tagged with their dtype. Each operator computes in f64 and
//! rounds its result once to the result dtype (so f32 results are correctly rounded, which is
//! at least as accurate as any backend and the oracle rewrites and lowering are checked
//! against). Integers are exact below 2^53, the same limit the ISA's integer arithmetic has: an
//! int64 or uint64 input or constant holding a value f64 cannot represent (and that would not
//! saturate back to itself, as i64::MAX does) is refused with [`EvalError::InexactInteger`]
//! rather than rounded, and arithmetic on values beyond 2^53 is not exact.

use super::ops::{BinaryOp, GraphOp, UnaryOp, broadcast_shapes};
use super::{Graph, Node, ValueId};
use crate::dtype::DType;
use crate::host::HostTensor;
use ndarray::{ArrayD, Axis, IxDyn, Zip};
use std::collections::BTreeMap;

/// Why a graph could not be evaluated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A graph input was not supplied.
    #[error("missing input `{0}`")]
    MissingInput(String),
    /// A supplied input has the wrong dtype or shape.
    #[error("input `{name}` must be {expected}, got {got}")]
    InputMismatch {
        /// Input name.
        name: String,
        /// Declared type.
        expected: String,
        /// Given type.
        got: String,
    },
    /// A node failed.
    #[error("node `{node}` ({op}): {message}")]
    Node {
        /// Node name.
        node: String,
        /// Operator.
        op: &'static str,
        /// What went wrong.
        message: String,
    },
    /// An int64 or uint64 input or constant holds a value f64 cannot represent.
    #[error(
        "`{name}` holds the {dtype} value {value}, which the evaluator's f64 cannot hold exactly"
    )]
    InexactInteger {
        /// Input or constant name.
        name: String,
        /// Its dtype.
        dtype: DType,
        /// The value.
        value: String,
    },
    /// A value was used before it was computed (graph not in topological order).
    #[error("value `{0}` is used before it is defined")]
    Undefined(String),
}

/// Evaluates the graph on `inputs` (by name) and returns its outputs by name.
pub fn evaluate(
    graph: &Graph,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<String, HostTensor>, EvalError> {
    let env = evaluate_all(graph, inputs)?;
    let mut out = BTreeMap::new();
    for &id in &graph.outputs {
        let v = graph.value(id);
        let arr = env
            .get(&id)
            .ok_or_else(|| EvalError::Undefined(v.name.clone()))?;
        out.insert(v.name.clone(), to_host(v.ty.dtype, arr));
    }
    Ok(out)
}

/// Evaluates every node; returns each value computed (inputs and constants included).
pub fn evaluate_all(
    graph: &Graph,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<ValueId, ArrayD<f64>>, EvalError> {
    let mut env: BTreeMap<ValueId, ArrayD<f64>> = BTreeMap::new();
    for &id in &graph.inputs {
        let v = graph.value(id);
        let t = inputs
            .get(&v.name)
            .ok_or_else(|| EvalError::MissingInput(v.name.clone()))?;
        if t.dtype != v.ty.dtype || t.shape != v.ty.shape {
            return Err(EvalError::InputMismatch {
                name: v.name.clone(),
                expected: v.ty.to_string(),
                got: format!("{}{:?}", t.dtype, t.shape),
            });
        }
        check_exact(&v.name, t)?;
        env.insert(id, t.to_array_f64());
    }
    for (&id, t) in &graph.constants {
        check_exact(&graph.value(id).name, t)?;
        env.insert(id, t.to_array_f64());
    }
    for node in &graph.nodes {
        let args: Vec<&ArrayD<f64>> = node
            .inputs
            .iter()
            .map(|id| {
                env.get(id)
                    .ok_or_else(|| EvalError::Undefined(graph.value(*id).name.clone()))
            })
            .collect::<Result<_, _>>()?;
        let arg_types: Vec<DType> = node.inputs.iter().map(|id| graph.ty(*id).dtype).collect();
        let results = eval_node(node, &args, &arg_types).map_err(|message| EvalError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            message,
        })?;
        for (id, arr) in node.outputs.iter().zip(results) {
            let dtype = graph.ty(*id).dtype;
            env.insert(*id, arr.mapv(|x| dtype.round(x)));
        }
    }
    Ok(env)
}

/// Refuses a 64-bit integer tensor with a value that does not survive decoding to f64.
fn check_exact(name: &str, t: &HostTensor) -> Result<(), EvalError> {
    match t.first_inexact_in_f64() {
        Some(v) => Err(EvalError::InexactInteger {
            name: name.to_string(),
            dtype: t.dtype,
            value: v.to_string(),
        }),
        None => Ok(()),
    }
}

fn to_host(dtype: DType, arr: &ArrayD<f64>) -> HostTensor {
    let values: Vec<f64> = arr.iter().copied().collect();
    HostTensor::from_f64(dtype, arr.shape(), &values)
}

/// Evaluates one node on f64 arrays (results not yet rounded to their dtype).
fn eval_node(
    node: &Node,
    args: &[&ArrayD<f64>],
    types: &[DType],
) -> Result<Vec<ArrayD<f64>>, String> {
    let one = |a: ArrayD<f64>| Ok(vec![a]);
    match &node.op {
        GraphOp::MatMul => one(matmul(args[0], args[1])?),
        GraphOp::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            // A transposed view is column-major; matmul reshapes its operands by row-major
            // order, so make them standard layout first.
            let a = if *trans_a {
                args[0].t().as_standard_layout().into_owned()
            } else {
                args[0].clone()
            };
            let b = if *trans_b {
                args[1].t().as_standard_layout().into_owned()
            } else {
                args[1].clone()
            };
            let mut y = matmul(&a, &b)?.mapv(|v| v * alpha);
            if let Some(c) = args.get(2) {
                let cb = c.broadcast(y.shape()).ok_or("C does not broadcast")?;
                Zip::from(&mut y).and(&cb).for_each(|y, &c| *y += beta * c);
            }
            one(y)
        }
        GraphOp::Binary(op) => {
            let integer = types.iter().all(|t| t.is_integer());
            one(binary(args[0], args[1], |a, b| {
                binary_scalar(*op, a, b, integer)
            })?)
        }
        GraphOp::Unary(op) => one(args[0].mapv(|x| unary_scalar(*op, x))),
        GraphOp::Softmax { axis } => {
            let mut y = args[0].clone();
            for mut lane in y.lanes_mut(Axis(*axis)) {
                let max = lane.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                lane.mapv_inplace(|v| (v - max).exp());
                let sum = lane.sum();
                lane.mapv_inplace(|v| v / sum);
            }
            one(y)
        }
        GraphOp::Reshape { shape } => one(args[0]
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(shape))
            .map_err(|e| e.to_string())?),
        GraphOp::Transpose { perm } => one(args[0]
            .clone()
            .permuted_axes(IxDyn(perm))
            .as_standard_layout()
            .into_owned()),
        GraphOp::Identity | GraphOp::Cast { .. } => one(args[0].clone()),
        GraphOp::Elementwise(op) => one(super::elementwise::eval(*op, args, types)?),
        GraphOp::Gather { axis } => one(gather(args[0], args[1], *axis)?),
        GraphOp::Reduce(r) => one(r.eval(args[0])?),
        GraphOp::Movement(m) => one(m.eval(args)?),
        GraphOp::Conv(c) => one(c.eval(args)?),
        GraphOp::Pool(p) => one(p.eval(args[0])?),
        GraphOp::Index(op) => op.eval(args),
        GraphOp::Scan(s) => one(s.eval(args[0])),
        GraphOp::Fused(f) => one(f.eval(args, types)?),
        GraphOp::Custom(c) => Err(format!(
            "custom operator {} has no reference definition in the evaluator",
            c.qualified()
        )),
        GraphOp::Concat { axis } => {
            let views: Vec<_> = args.iter().map(|a| a.view()).collect();
            one(ndarray::concatenate(Axis(*axis), &views).map_err(|e| e.to_string())?)
        }
    }
}

fn binary(
    a: &ArrayD<f64>,
    b: &ArrayD<f64>,
    f: impl Fn(f64, f64) -> f64,
) -> Result<ArrayD<f64>, String> {
    let shape = broadcast_shapes(a.shape(), b.shape()).map_err(|e| e.to_string())?;
    let av = a.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?;
    let bv = b.broadcast(IxDyn(&shape)).ok_or("broadcast failed")?;
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

/// One element of a binary operator. Integer division truncates toward zero (C semantics, as
/// onnxruntime computes it).
pub fn binary_scalar(op: BinaryOp, a: f64, b: f64, integer: bool) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div if integer => {
            if b == 0.0 {
                0.0
            } else {
                (a / b).trunc()
            }
        }
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Max => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        }
        BinaryOp::Min => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(b)
            }
        }
    }
}

/// One element of a unary operator.
pub fn unary_scalar(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Erf => libm::erf(x),
    }
}

/// numpy `matmul` on f64 arrays.
fn matmul(a: &ArrayD<f64>, b: &ArrayD<f64>) -> Result<ArrayD<f64>, String> {
    let out_shape = super::ops::matmul_shape(a.shape(), b.shape()).map_err(|e| e.to_string())?;
    let a2 = if a.ndim() == 1 {
        a.clone().insert_axis(Axis(0))
    } else {
        a.clone()
    };
    let b2 = if b.ndim() == 1 {
        b.clone().insert_axis(Axis(1))
    } else {
        b.clone()
    };
    let (m, k) = (a2.shape()[a2.ndim() - 2], a2.shape()[a2.ndim() - 1]);
    let n = b2.shape()[b2.ndim() - 1];
    let batch = broadcast_shapes(&a2.shape()[..a2.ndim() - 2], &b2.shape()[..b2.ndim() - 2])
        .map_err(|e| e.to_string())?;
    let mut a_shape = batch.clone();
    a_shape.extend([m, k]);
    let mut b_shape = batch.clone();
    b_shape.extend([k, n]);
    let av = a2
        .broadcast(IxDyn(&a_shape))
        .ok_or("batch broadcast failed")?;
    let bv = b2
        .broadcast(IxDyn(&b_shape))
        .ok_or("batch broadcast failed")?;
    let nb: usize = batch.iter().product();
    // Standard layout first: a transposed operand (Gemm's transA) is not row-major.
    let a3 = av
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((nb, m, k))
        .map_err(|e| e.to_string())?;
    let b3 = bv
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((nb, k, n))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(nb * m * n);
    for i in 0..nb {
        let c = a3.index_axis(Axis(0), i).dot(&b3.index_axis(Axis(0), i));
        out.extend(c.iter());
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(|e| e.to_string())
}

fn gather(data: &ArrayD<f64>, indices: &ArrayD<f64>, axis: usize) -> Result<ArrayD<f64>, String> {
    let len = data.shape()[axis] as i64;
    let flat: Vec<usize> = indices
        .iter()
        .map(|&i| {
            let i = i as i64;
            let j = if i < 0 { i + len } else { i };
            if (0..len).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!(
                    "index {i} out of range for axis {axis} of size {len}"
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    let picked = data.select(Axis(axis), &flat);
    let mut shape = data.shape()[..axis].to_vec();
    shape.extend(indices.shape());
    shape.extend(&data.shape()[axis + 1..]);
    // `select` along an inner axis need not give a row-major array; reshape by logical order.
    picked
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&shape))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::TensorType;

    fn host(shape: &[usize], v: &[f64]) -> HostTensor {
        HostTensor::from_f64(DType::F32, shape, v)
    }

    #[test]
    fn gemm_relu_softmax_by_hand() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::new(DType::F32, &[1, 2]));
        let w = g.add_constant("w", host(&[2, 2], &[1.0, -1.0, 2.0, 0.5]));
        let b = g.add_constant("b", host(&[2], &[0.5, 0.0]));
        let gemm = GraphOp::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        };
        let h = g.add_node("gemm", gemm, &[x, w, b]).unwrap()[0];
        let r = g
            .add_node("relu", GraphOp::Unary(UnaryOp::Relu), &[h])
            .unwrap()[0];
        let y = g
            .add_node("sm", GraphOp::Softmax { axis: 1 }, &[r])
            .unwrap()[0];
        g.outputs.push(y);
        let out = evaluate(
            &g,
            &BTreeMap::from([("x".to_string(), host(&[1, 2], &[1.0, 2.0]))]),
        )
        .unwrap();
        // x.w = [1*1 + 2*2, 1*-1 + 2*0.5] = [5, 0]; + b = [5.5, 0]; relu keeps both;
        // softmax([5.5, 0]) = [1/(1+e^-5.5), e^-5.5/(1+e^-5.5)].
        let y = out["sm"].to_f64_vec();
        let e = (-5.5f64).exp();
        assert!((y[0] - 1.0 / (1.0 + e)).abs() < 1e-7);
        assert!((y[1] - e / (1.0 + e)).abs() < 1e-7);
    }

    #[test]
    fn batched_matmul_broadcasts() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 1, 2, 3]), |i| {
            (i[0] * 6 + i[2] * 3 + i[3]) as f64
        });
        let b = ArrayD::from_shape_fn(IxDyn(&[3, 3, 1]), |i| (i[0] + i[1]) as f64);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 3, 2, 1]);
        // c[1, 2, 1, 0] = sum_k a[1, 0, 1, k] * b[2, k, 0] = (9 * 2) + (10 * 3) + (11 * 4) = 92.
        assert_eq!(c[[1, 2, 1, 0]], 92.0);
    }

    #[test]
    fn gather_negative_and_out_of_range() {
        let d = ArrayD::from_shape_fn(IxDyn(&[3, 2]), |i| (i[0] * 10 + i[1]) as f64);
        let idx = ArrayD::from_shape_vec(IxDyn(&[2]), vec![-1.0, 0.0]).unwrap();
        let g = gather(&d, &idx, 0).unwrap();
        assert_eq!(
            g.iter().copied().collect::<Vec<_>>(),
            vec![20.0, 21.0, 0.0, 1.0]
        );
        let bad = ArrayD::from_shape_vec(IxDyn(&[1]), vec![3.0]).unwrap();
        assert!(gather(&d, &bad, 0).is_err());
    }

    #[test]
    fn matmul_of_transposed_views() {
        // A transposed array is not in standard layout; matmul must not depend on layout.
        let a = ArrayD::from_shape_fn(IxDyn(&[3, 2]), |i| (i[0] * 2 + i[1]) as f64);
        let at = a.t().to_owned();
        let b = ArrayD::from_shape_fn(IxDyn(&[3, 1]), |i| i[0] as f64 + 1.0);
        let c = matmul(&at, &b).unwrap();
        // at = [[0, 2, 4], [1, 3, 5]]; . [1, 2, 3] = [16, 22].
        assert_eq!(c.iter().copied().collect::<Vec<_>>(), vec![16.0, 22.0]);
    }

    #[test]
    fn gemm_with_transposed_operands() {
        let mut g = Graph::new("t");
        let a = g.add_constant("a", host(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
        let b = g.add_constant("b", host(&[2, 3], &[1.0, 0.0, 2.0, 0.0, 1.0, 1.0]));
        let gemm = GraphOp::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: true,
            trans_b: true,
        };
        let y = g.add_node("gemm", gemm, &[a, b]).unwrap()[0];
        g.outputs.push(y);
        // A^T = [[1, 2, 3], [4, 5, 6]], B^T = [[1, 0], [0, 1], [2, 1]]: A^T.B^T = [[7, 5], [16, 11]].
        let out = evaluate(&g, &BTreeMap::new()).unwrap();
        assert_eq!(out["gemm"].to_f64_vec(), [7.0, 5.0, 16.0, 11.0]);
    }

    #[test]
    fn sixty_four_bit_values_beyond_f64_are_refused() {
        let mut g = Graph::new("id");
        let x = g.add_input("x", TensorType::new(DType::U64, &[2]));
        let y = g.add_node("y", GraphOp::Identity, &[x]).unwrap();
        g.outputs.extend(y);
        let u = |v: [u64; 2]| HostTensor {
            dtype: DType::U64,
            shape: vec![2],
            data: v.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        // u64::MAX becomes 2^64 and saturates back; 2^53 + 1 would silently become 2^53.
        let out = evaluate(
            &g,
            &BTreeMap::from([("x".to_string(), u([u64::MAX, 1 << 60]))]),
        );
        assert_eq!(out.unwrap()["y"], u([u64::MAX, 1 << 60]));
        let err = evaluate(
            &g,
            &BTreeMap::from([("x".to_string(), u([1, (1 << 53) + 1]))]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, EvalError::InexactInteger { value, .. } if value == "9007199254740993"),
            "{err}"
        );
    }

    #[test]
    fn integer_division_truncates() {
        assert_eq!(binary_scalar(BinaryOp::Div, -7.0, 2.0, true), -3.0);
        assert_eq!(binary_scalar(BinaryOp::Div, -7.0, 2.0, false), -3.5);
    }
}
