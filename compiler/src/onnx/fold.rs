//! Compile-time computations: folding a node whose inputs are all constants, the value-dependent
//! shape operators (Shape, ConstantOfShape, Range), and the static result shapes of Reshape,
//! Flatten, Squeeze and Unsqueeze.
//!
//! Operators that exist as [`GraphOp`]s are folded by running the reference evaluator on a
//! one-node graph, so a folded constant has exactly the value the node would compute at run
//! time. Messages here are plain strings; the caller wraps them with the node's name.

use super::tensor::checked_elems;
use std::collections::BTreeMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, GraphOp, TensorType, evaluate};
use tessera_ir::host::HostTensor;

/// Results larger than this many elements are not folded (they stay nodes), and value-dependent
/// operators that would make one are errors: a model that builds such a tensor from a shape is
/// almost certainly corrupt, and folding it would only waste memory.
pub const FOLD_LIMIT: usize = 1 << 24;

/// The most elements folding one node may materialise (see [`fold_cost`]).
pub const FOLD_COST_LIMIT: usize = 1 << 26;

/// Elements the evaluator materialises to compute `op` (its result, plus the broadcast
/// operands of a matmul, which can dwarf the result: `[1000, 1000] x [1000, 1000, 1]`), so folding
/// can be refused before it exhausts memory. Saturates instead of overflowing.
pub fn fold_cost(op: &GraphOp, operands: &[&TensorType], result_elems: usize) -> usize {
    let dims = |i: usize| operands.get(i).map_or(&[][..], |t| t.shape.as_slice());
    let prod = |s: &[usize]| s.iter().fold(1usize, |n, &d| n.saturating_mul(d));
    let (a, b) = (dims(0), dims(1));
    let operand_elems = match op {
        GraphOp::MatMul => {
            // [m, k] x [k, n] per batch, with 1-D operands promoted as numpy does.
            let (m, k) = match a {
                [] => (1, 1),
                [k] => (1, *k),
                [.., m, k] => (*m, *k),
            };
            let n = match b {
                [] | [_] => 1,
                [.., n] => *n,
            };
            let batch = |s: &[usize]| prod(s.get(..s.len().saturating_sub(2)).unwrap_or(&[]));
            // An upper bound of the broadcast batch count.
            let nb = batch(a).saturating_mul(batch(b));
            nb.saturating_mul(m.saturating_mul(k).saturating_add(k.saturating_mul(n)))
        }
        _ => operands
            .iter()
            .fold(0usize, |n, t| n.saturating_add(prod(&t.shape))),
    };
    operand_elems.saturating_add(result_elems)
}

/// True when every value of `t` survives the reference evaluator, which holds values as f64
/// ([`HostTensor::first_inexact_in_f64`]). Constants that do not are not folded: the device
/// moves their bytes exactly.
pub fn survives_f64(t: &HostTensor) -> bool {
    t.first_inexact_in_f64().is_none()
}

/// Evaluates `op` on constant operands with the reference evaluator.
pub fn evaluate_one(op: &GraphOp, operands: &[&HostTensor]) -> Result<HostTensor, String> {
    let mut g = Graph::new("fold");
    let ids: Vec<_> = operands
        .iter()
        .enumerate()
        .map(|(i, t)| g.add_constant(format!("operand{i}"), (*t).clone()))
        .collect();
    let out = g
        .add_node("result", op.clone(), &ids)
        .map_err(|e| e.to_string())?;
    g.outputs.extend(out);
    let mut results = evaluate(&g, &BTreeMap::new()).map_err(|e| e.to_string())?;
    results
        .remove("result")
        .ok_or_else(|| "the evaluator returned no result".to_string())
}

/// An int64 tensor from values.
pub fn i64_tensor(shape: &[usize], values: &[i64]) -> HostTensor {
    HostTensor {
        dtype: DType::I64,
        shape: shape.to_vec(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// The integer values of a constant (exact: the 64-bit types are read from their bytes, not
/// through f64). `None` for a float tensor, or a uint64 value above the int64 range.
pub fn tensor_ints(t: &HostTensor) -> Option<Vec<i64>> {
    let words = || {
        t.data.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            b
        })
    };
    match t.dtype {
        DType::I64 => Some(words().map(i64::from_le_bytes).collect()),
        DType::U64 => words()
            .map(|b| i64::try_from(u64::from_le_bytes(b)).ok())
            .collect(),
        d if d.is_integer() => Some(t.to_f64_vec().into_iter().map(|v| v as i64).collect()),
        _ => None,
    }
}

/// `axis` in `[-rank, rank)` made non-negative.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = i64::try_from(rank).ok()?;
    let a = if axis < 0 { axis.checked_add(r)? } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// ONNX `Shape`: the dims of `shape` from `start` to `end` (opset 15 slicing: negative values
/// count from the back, both are clamped to `[0, rank]`; Operators.md, Shape-15).
pub fn shape_op(shape: &[usize], start: i64, end: Option<i64>) -> HostTensor {
    let r = shape.len() as i64;
    let clamp = |v: i64| {
        let v = if v < 0 { v.saturating_add(r) } else { v };
        v.clamp(0, r) as usize
    };
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let dims: Vec<i64> = shape
        .get(s..e.max(s))
        .unwrap_or(&[])
        .iter()
        .map(|&d| d as i64)
        .collect();
    i64_tensor(&[dims.len()], &dims)
}

/// ONNX `ConstantOfShape`: `value` (one element) repeated over `dims`.
pub fn constant_of_shape(dims: &[i64], value: &HostTensor) -> Result<HostTensor, String> {
    if value.elems() != 1 {
        return Err(format!(
            "attribute `value` must hold one element, it has shape {:?}",
            value.shape
        ));
    }
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d} in {dims:?}")))
        .collect::<Result<_, _>>()?;
    let n = checked_elems(&shape)
        .filter(|&n| n <= FOLD_LIMIT)
        .ok_or_else(|| format!("shape {dims:?} is too large to build at compile time"))?;
    Ok(HostTensor {
        dtype: value.dtype,
        shape,
        data: value.data.repeat(n),
    })
}

/// ONNX `Range`: `start, start + delta, ...` while short of `limit`; the count is
/// `max(ceil((limit - start) / delta), 0)` (Operators.md, Range-11).
pub fn range(dtype: DType, start: f64, limit: f64, delta: f64) -> Result<HostTensor, String> {
    if delta == 0.0 || !delta.is_finite() || !start.is_finite() || !limit.is_finite() {
        return Err(format!(
            "cannot make a range from {start} to {limit} by {delta}"
        ));
    }
    let count = ((limit - start) / delta).ceil().max(0.0);
    if count > FOLD_LIMIT as f64 {
        return Err(format!(
            "range from {start} to {limit} by {delta} has {count} elements, too many to build \
             at compile time"
        ));
    }
    let n = count as usize;
    // Integer ranges accumulate exactly; float ranges as start + i * delta rounded to the
    // dtype, which is what onnxruntime computes for the sizes shape computations use.
    let values: Vec<f64> = (0..n).map(|i| start + i as f64 * delta).collect();
    Ok(HostTensor::from_f64(dtype, &[n], &values))
}

/// The static result of ONNX `Reshape`: 0 copies the input's dim at that index unless
/// `allowzero` (opset 14), one -1 takes the remaining elements (Operators.md, Reshape-14).
pub fn reshape_shape(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let total = checked_elems(input).ok_or("input is too large")?;
    let mut infer_at = None;
    let mut out = Vec::with_capacity(spec.len());
    for (i, &d) in spec.iter().enumerate() {
        out.push(match d {
            -1 if infer_at.is_some() => {
                return Err(format!("shape {spec:?} has more than one -1"));
            }
            -1 => {
                infer_at = Some(i);
                1
            }
            0 if !allowzero => *input.get(i).ok_or_else(|| {
                format!(
                    "shape {spec:?} copies dim {i} (a 0) but the input {input:?} has rank {}",
                    input.len()
                )
            })?,
            d => usize::try_from(d).map_err(|_| format!("shape {spec:?} has invalid dim {d}"))?,
        });
    }
    if allowzero && infer_at.is_some() && spec.contains(&0) {
        return Err(format!(
            "shape {spec:?} has both 0 and -1, which allowzero=1 forbids"
        ));
    }
    let known = checked_elems(&out).ok_or_else(|| format!("shape {spec:?} is too large"))?;
    if let Some(i) = infer_at {
        if known == 0 || total % known != 0 {
            return Err(format!(
                "cannot reshape {input:?} ({total} elements) to {spec:?}: the -1 has no whole size"
            ));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {spec:?} ({known} elements)"
        ));
    }
    Ok(out)
}

/// ONNX `Flatten` at `axis` (in `[-rank, rank]`): `[prod(d[:axis]), prod(d[axis:])]`.
pub fn flatten_shape(input: &[usize], axis: i64) -> Result<Vec<usize>, String> {
    let r = input.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let (head, tail) = input.split_at(a as usize);
    Ok(vec![
        checked_elems(head).ok_or("input is too large")?,
        checked_elems(tail).ok_or("input is too large")?,
    ])
}

/// ONNX `Unsqueeze`: a 1 inserted at each of `axes`, which index the *result* (negative ones
/// count from its back; Operators.md, Unsqueeze-13).
pub fn unsqueeze_shape(input: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let rank = input.len() + axes.len();
    let mut ones = vec![false; rank];
    for &a in axes {
        let i = normalize_axis(a, rank)
            .ok_or_else(|| format!("axis {a} is out of range for result rank {rank}"))?;
        if std::mem::replace(&mut ones[i], true) {
            return Err(format!("axes {axes:?} repeat axis {a}"));
        }
    }
    let mut dims = input.iter();
    Ok(ones
        .iter()
        .map(|&one| {
            if one {
                1
            } else {
                dims.next().copied().unwrap_or(1)
            }
        })
        .collect())
}

/// ONNX `Squeeze`: remove `axes` (each must be 1), or every 1 when no axes are given.
pub fn squeeze_shape(input: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let Some(axes) = axes else {
        return Ok(input.iter().copied().filter(|&d| d != 1).collect());
    };
    let mut drop = vec![false; input.len()];
    for &a in axes {
        let i = normalize_axis(a, input.len())
            .ok_or_else(|| format!("axis {a} is out of range for rank {}", input.len()))?;
        if input.get(i) != Some(&1) {
            return Err(format!(
                "axis {a} of {input:?} has size {}, not 1",
                input.get(i).copied().unwrap_or(0)
            ));
        }
        drop[i] = true;
    }
    Ok(input
        .iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(&x, _)| x)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_rules() {
        assert_eq!(
            reshape_shape(&[2, 3, 4, 5], &[0, -1, 5], false).unwrap(),
            [2, 12, 5]
        );
        assert_eq!(reshape_shape(&[2, 0], &[0, 4], true).unwrap(), [0, 4]);
        assert!(reshape_shape(&[0, 3], &[0, -1], true).is_err());
        assert_eq!(reshape_shape(&[0, 3], &[0, 3], true).unwrap(), [0, 3]);
        assert!(reshape_shape(&[6], &[-1, -1], false).is_err());
        assert!(reshape_shape(&[6], &[4, -1], false).is_err());
        assert!(reshape_shape(&[6], &[0, 0, 0], false).is_err());
        assert!(reshape_shape(&[6], &[-7], false).is_err());
        assert!(reshape_shape(&[6], &[i64::MAX, i64::MAX], false).is_err());
    }

    #[test]
    fn squeeze_unsqueeze_flatten() {
        assert_eq!(unsqueeze_shape(&[3, 4], &[0, -1]).unwrap(), [1, 3, 4, 1]);
        assert!(unsqueeze_shape(&[3], &[0, 0]).is_err());
        assert!(unsqueeze_shape(&[3], &[5]).is_err());
        assert_eq!(squeeze_shape(&[1, 3, 1], None).unwrap(), [3]);
        assert_eq!(squeeze_shape(&[1, 3, 1], Some(&[-1])).unwrap(), [1, 3]);
        assert!(squeeze_shape(&[1, 3, 1], Some(&[1])).is_err());
        assert_eq!(flatten_shape(&[2, 3, 4], 0).unwrap(), [1, 24]);
        assert_eq!(flatten_shape(&[2, 3, 4], -1).unwrap(), [6, 4]);
        assert_eq!(flatten_shape(&[2, 3, 4], 3).unwrap(), [24, 1]);
        assert!(flatten_shape(&[2, 3, 4], 4).is_err());
    }

    #[test]
    fn matmul_fold_cost_counts_broadcast_operands() {
        let a = TensorType::new(DType::F32, &[1000, 1000]);
        let b = TensorType::new(DType::F32, &[1000, 1000, 1]);
        // The result is only 10^6 elements, but A broadcasts to 1000 copies of 10^6.
        let cost = fold_cost(&GraphOp::MatMul, &[&a, &b], 1_000_000);
        assert!(cost > FOLD_COST_LIMIT, "{cost}");
        let x = TensorType::new(DType::I64, &[3]);
        assert_eq!(fold_cost(&GraphOp::Concat { axis: 0 }, &[&x, &x], 6), 12);
    }

    #[test]
    fn value_dependent_ops() {
        assert_eq!(tensor_ints(&shape_op(&[2, 3, 4], 1, None)).unwrap(), [3, 4]);
        assert_eq!(
            tensor_ints(&shape_op(&[2, 3, 4], -1, Some(-5))).unwrap(),
            [0i64; 0]
        );
        let r = range(DType::I64, 0.0, 7.0, 2.0).unwrap();
        assert_eq!(tensor_ints(&r).unwrap(), [0, 2, 4, 6]);
        // uint64 is read from its bytes: 2^53 + 1 stays exact, past i64::MAX is refused.
        let u = |v: u64| HostTensor {
            dtype: DType::U64,
            shape: vec![1],
            data: v.to_le_bytes().to_vec(),
        };
        assert_eq!(tensor_ints(&u((1 << 53) + 1)).unwrap(), [(1 << 53) + 1]);
        assert_eq!(tensor_ints(&u(1 << 63)), None);
        assert!(survives_f64(&u(1 << 63)) && survives_f64(&u(u64::MAX)));
        assert!(!survives_f64(&u((1 << 53) + 1)));
        assert!(survives_f64(&i64_tensor(&[2], &[i64::MAX, i64::MIN])));
        assert!(!survives_f64(&i64_tensor(&[1], &[-(1 << 53) - 1])));
        assert_eq!(range(DType::F32, 1.0, 0.0, 1.0).unwrap().elems(), 0);
        assert!(range(DType::F32, 0.0, 1.0, 0.0).is_err());
        assert!(range(DType::I64, 0.0, 1e18, 1.0).is_err());
        let one = HostTensor::from_f64(DType::F32, &[1], &[1.5]);
        let c = constant_of_shape(&[2, 3], &one).unwrap();
        assert_eq!(c.to_f64_vec(), [1.5; 6]);
        assert!(constant_of_shape(&[-1], &one).is_err());
        assert!(constant_of_shape(&[1 << 40, 1 << 40], &one).is_err());
    }
}
