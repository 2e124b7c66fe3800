//! Indexing operators whose indices are values (`GatherElements`, `GatherND`,
//! `ScatterElements`, `ScatterND`, `TopK`): attributes, shape rules and reference semantics.
//! (`Gather` keeps its own [`super::GraphOp::Gather`] variant.)
//!
//! Semantics follow onnx/docs/Operators.md: GatherElements-13, GatherND-13 (`batch_dims`),
//! ScatterElements-18 and ScatterND-18 (`reduction` none/add/mul/max/min), TopK-11 (`largest`,
//! `sorted`; `k` is normalised to an attribute at import). Negative indices count from the end
//! of their axis. An index outside `[-d, d)` is an error for ONNX; the evaluator reports it.
//! Scatter updates apply in row-major order of the indices, so with `reduction=none` a
//! duplicated index keeps the last update (the spec leaves duplicates undefined there).

use super::TensorType;
use super::ops::ShapeError;
use crate::dtype::DType;
use ndarray::{ArrayD, Dimension, IxDyn};

/// How a scatter combines an update with the value already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterReduction {
    /// Replace.
    None,
    /// Add.
    Add,
    /// Multiply.
    Mul,
    /// Keep the larger.
    Max,
    /// Keep the smaller.
    Min,
}

impl ScatterReduction {
    /// The attribute's spelling.
    pub fn name(self) -> &'static str {
        match self {
            ScatterReduction::None => "none",
            ScatterReduction::Add => "add",
            ScatterReduction::Mul => "mul",
            ScatterReduction::Max => "max",
            ScatterReduction::Min => "min",
        }
    }

    /// `old` combined with `update`.
    pub fn apply(self, old: f64, update: f64) -> f64 {
        match self {
            ScatterReduction::None => update,
            ScatterReduction::Add => old + update,
            ScatterReduction::Mul => old * update,
            ScatterReduction::Max => {
                if old.is_nan() || update.is_nan() {
                    f64::NAN
                } else {
                    old.max(update)
                }
            }
            ScatterReduction::Min => {
                if old.is_nan() || update.is_nan() {
                    f64::NAN
                } else {
                    old.min(update)
                }
            }
        }
    }
}

/// An indexing operator with its normalised attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexOp {
    /// `out[i] = data[i with i[axis] replaced by indices[i]]`; inputs `data`, `indices`.
    GatherElements {
        /// The indexed axis, non-negative.
        axis: usize,
    },
    /// `out[b, q, s] = data[b, indices[b, q, :], s]` over the first `batch_dims` axes;
    /// inputs `data`, `indices` (last axis: a tuple of leading data coordinates).
    GatherNd {
        /// Leading axes shared by data and indices.
        batch_dims: usize,
    },
    /// `out = data`, then `out[i with i[axis] = indices[i]] op= updates[i]` for every `i` of
    /// `indices`; inputs `data`, `indices`, `updates`.
    ScatterElements {
        /// The indexed axis, non-negative.
        axis: usize,
        /// How updates combine.
        reduction: ScatterReduction,
    },
    /// `out = data`, then `out[indices[u, :], ...] op= updates[u, ...]`; inputs `data`,
    /// `indices`, `updates`.
    ScatterNd {
        /// How updates combine.
        reduction: ScatterReduction,
    },
    /// The `k` largest (or smallest) elements along `axis` and their int64 indices: two
    /// results. Equal values keep the lower index first; the result is always sorted (allowed
    /// when `sorted` is 0, whose order the spec leaves open).
    TopK {
        /// The axis, non-negative.
        axis: usize,
        /// How many elements.
        k: usize,
        /// Largest (true) or smallest.
        largest: bool,
        /// The `sorted` attribute (recorded; the result is sorted either way).
        sorted: bool,
    },
}

fn check_indices(t: &TensorType) -> Result<(), ShapeError> {
    if matches!(t.dtype, DType::I64 | DType::I32) {
        Ok(())
    } else {
        Err(ShapeError::Mismatch(format!(
            "indices must be int32 or int64, got {}",
            t.dtype
        )))
    }
}

fn arity(inputs: &[&TensorType], n: usize, expected: &'static str) -> Result<(), ShapeError> {
    if inputs.len() == n {
        Ok(())
    } else {
        Err(ShapeError::Arity {
            expected,
            got: inputs.len(),
        })
    }
}

fn mismatch<T>(msg: String) -> Result<T, ShapeError> {
    Err(ShapeError::Mismatch(msg))
}

impl IndexOp {
    /// The ONNX operator name.
    pub fn name(&self) -> &'static str {
        match self {
            IndexOp::GatherElements { .. } => "GatherElements",
            IndexOp::GatherNd { .. } => "GatherND",
            IndexOp::ScatterElements { .. } => "ScatterElements",
            IndexOp::ScatterNd { .. } => "ScatterND",
            IndexOp::TopK { .. } => "TopK",
        }
    }

    /// The attributes as the graph printer shows them.
    pub fn attributes(&self) -> String {
        match self {
            IndexOp::GatherElements { axis } => format!("axis={axis}"),
            IndexOp::GatherNd { batch_dims } => format!("batch_dims={batch_dims}"),
            IndexOp::ScatterElements { axis, reduction } => {
                format!("axis={axis}, reduction={}", reduction.name())
            }
            IndexOp::ScatterNd { reduction } => format!("reduction={}", reduction.name()),
            IndexOp::TopK {
                axis,
                k,
                largest,
                sorted,
            } => format!("axis={axis}, k={k}, largest={largest}, sorted={sorted}"),
        }
    }

    /// The result types (TopK has two: values and int64 indices).
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, ShapeError> {
        match self {
            IndexOp::GatherElements { axis } => {
                arity(inputs, 2, "2")?;
                let (data, idx) = (inputs[0], inputs[1]);
                check_indices(idx)?;
                elements_shapes(*axis, &data.shape, &idx.shape, "indices")?;
                Ok(vec![TensorType::new(data.dtype, &idx.shape)])
            }
            IndexOp::GatherNd { batch_dims } => {
                arity(inputs, 2, "2")?;
                let (data, idx) = (inputs[0], inputs[1]);
                check_indices(idx)?;
                let m = nd_tuple(*batch_dims, &data.shape, &idx.shape)?;
                let q = idx.shape.len();
                let mut shape = idx.shape[..q - 1].to_vec();
                shape.extend(&data.shape[batch_dims + m..]);
                Ok(vec![TensorType::new(data.dtype, &shape)])
            }
            IndexOp::ScatterElements { axis, .. } => {
                arity(inputs, 3, "3")?;
                let (data, idx, upd) = (inputs[0], inputs[1], inputs[2]);
                check_indices(idx)?;
                if upd.dtype != data.dtype || upd.shape != idx.shape {
                    return mismatch(format!(
                        "updates {upd} must have data's type and the indices' shape {:?}",
                        idx.shape
                    ));
                }
                elements_shapes(*axis, &data.shape, &idx.shape, "indices")?;
                Ok(vec![data.clone()])
            }
            IndexOp::ScatterNd { .. } => {
                arity(inputs, 3, "3")?;
                let (data, idx, upd) = (inputs[0], inputs[1], inputs[2]);
                check_indices(idx)?;
                let k = nd_tuple(0, &data.shape, &idx.shape)?;
                let q = idx.shape.len();
                let mut want = idx.shape[..q - 1].to_vec();
                want.extend(&data.shape[k..]);
                if upd.dtype != data.dtype || upd.shape != want {
                    return mismatch(format!("updates {upd} must be {}{want:?}", data.dtype));
                }
                Ok(vec![data.clone()])
            }
            IndexOp::TopK { axis, k, .. } => {
                arity(inputs, 1, "1")?;
                let x = inputs[0];
                if *axis >= x.shape.len() {
                    return mismatch(format!(
                        "axis {axis} out of range for rank {}",
                        x.shape.len()
                    ));
                }
                if *k > x.shape[*axis] {
                    return mismatch(format!(
                        "k = {k} is larger than axis {axis} of size {}",
                        x.shape[*axis]
                    ));
                }
                let mut shape = x.shape.clone();
                shape[*axis] = *k;
                Ok(vec![
                    TensorType::new(x.dtype, &shape),
                    TensorType::new(DType::I64, &shape),
                ])
            }
        }
    }

    /// Reference semantics (results not yet rounded to their dtypes).
    pub fn eval(&self, args: &[&ArrayD<f64>]) -> Result<Vec<ArrayD<f64>>, String> {
        match self {
            IndexOp::GatherElements { axis } => {
                let (data, idx) = (args[0], args[1]);
                let len = data.shape()[*axis];
                let mut out = Vec::with_capacity(idx.len());
                for (pos, &i) in idx.indexed_iter() {
                    let mut at = pos.slice().to_vec();
                    at[*axis] = wrap(i, len, *axis)?;
                    out.push(data[IxDyn(&at)]);
                }
                shaped(idx.shape(), out)
            }
            IndexOp::GatherNd { batch_dims } => {
                let (data, idx) = (args[0], args[1]);
                let (b, q) = (*batch_dims, idx.ndim());
                let m = idx.shape()[q - 1];
                let rest: usize = data.shape()[b + m..].iter().product();
                let batch: usize = data.shape()[..b].iter().product();
                let tuples = idx.len() / m.max(1);
                let per_batch = tuples / batch.max(1);
                let block = data.len() / batch.max(1);
                let data_flat: Vec<f64> = data.iter().copied().collect();
                let idx_flat: Vec<f64> = idx.iter().copied().collect();
                let mut out = Vec::with_capacity(tuples * rest);
                for t in 0..tuples {
                    let mut off = (t / per_batch.max(1)) * block;
                    let mut stride = block;
                    for j in 0..m {
                        let d = data.shape()[b + j];
                        stride /= d.max(1);
                        off += wrap(idx_flat[t * m + j], d, b + j)? * stride;
                    }
                    out.extend_from_slice(&data_flat[off..off + rest]);
                }
                let mut shape = idx.shape()[..q - 1].to_vec();
                shape.extend(&data.shape()[b + m..]);
                shaped(&shape, out)
            }
            IndexOp::ScatterElements { axis, reduction } => {
                let (data, idx, upd) = (args[0], args[1], args[2]);
                let mut out = data.clone();
                let len = data.shape()[*axis];
                for ((pos, &i), &u) in idx.indexed_iter().zip(upd.iter()) {
                    let mut at = pos.slice().to_vec();
                    at[*axis] = wrap(i, len, *axis)?;
                    let slot = &mut out[IxDyn(&at)];
                    *slot = reduction.apply(*slot, u);
                }
                Ok(vec![out])
            }
            IndexOp::ScatterNd { reduction } => {
                let (data, idx, upd) = (args[0], args[1], args[2]);
                let q = idx.ndim();
                let k = idx.shape()[q - 1];
                let rest: usize = data.shape()[k..].iter().product();
                let mut out: Vec<f64> = data.iter().copied().collect();
                let idx_flat: Vec<f64> = idx.iter().copied().collect();
                let upd_flat: Vec<f64> = upd.iter().copied().collect();
                for (t, u) in upd_flat.chunks(rest.max(1)).enumerate() {
                    let mut off = 0;
                    for j in 0..k {
                        let d = data.shape()[j];
                        off = off * d + wrap(idx_flat[t * k + j], d, j)?;
                    }
                    for (slot, &v) in out[off * rest..(off + 1) * rest].iter_mut().zip(u) {
                        *slot = reduction.apply(*slot, v);
                    }
                }
                shaped(data.shape(), out)
            }
            IndexOp::TopK {
                axis, k, largest, ..
            } => {
                let x = args[0];
                let mut shape = x.shape().to_vec();
                shape[*axis] = *k;
                let mut values = ArrayD::zeros(IxDyn(&shape));
                let mut indices = ArrayD::zeros(IxDyn(&shape));
                let lanes = x.lanes(ndarray::Axis(*axis)).into_iter();
                let outs = values
                    .lanes_mut(ndarray::Axis(*axis))
                    .into_iter()
                    .zip(indices.lanes_mut(ndarray::Axis(*axis)));
                for (lane, (mut v, mut i)) in lanes.zip(outs) {
                    for (j, (pick, value)) in
                        top_k(&lane.to_vec(), *k, *largest).into_iter().enumerate()
                    {
                        v[j] = value;
                        i[j] = pick as f64;
                    }
                }
                Ok(vec![values, indices])
            }
        }
    }
}

/// The `k` first elements of `xs` ordered by value (descending when `largest`), equal values
/// by ascending index: `(index, value)` pairs. The spec does not order NaN; here NaN comes
/// first in both directions (as max / min reductions, which propagate NaN, pick it).
pub fn top_k(xs: &[f64], k: usize, largest: bool) -> Vec<(usize, f64)> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    // A stable sort keeps equal values (and NaNs) in index order.
    order.sort_by(|&a, &b| {
        let (x, y) = (xs[a], xs[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            _ if largest => y.total_cmp(&x),
            _ => x.total_cmp(&y),
        }
    });
    order.into_iter().take(k).map(|i| (i, xs[i])).collect()
}

/// An index along an axis of size `len`, negative counting from the end.
fn wrap(i: f64, len: usize, axis: usize) -> Result<usize, String> {
    let j = if i < 0.0 { i + len as f64 } else { i };
    if j >= 0.0 && j < len as f64 {
        Ok(j as usize)
    } else {
        Err(format!(
            "index {i} out of range for axis {axis} of size {len}"
        ))
    }
}

fn shaped(shape: &[usize], values: Vec<f64>) -> Result<Vec<ArrayD<f64>>, String> {
    Ok(vec![
        ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| e.to_string())?,
    ])
}

/// GatherElements / ScatterElements: indices of data's rank, each axis but `axis` no longer
/// than data's (so every index position names a data element once its axis is resolved).
fn elements_shapes(
    axis: usize,
    data: &[usize],
    idx: &[usize],
    what: &str,
) -> Result<(), ShapeError> {
    if axis >= data.len() {
        return mismatch(format!("axis {axis} out of range for rank {}", data.len()));
    }
    if idx.len() != data.len()
        || idx
            .iter()
            .zip(data)
            .enumerate()
            .any(|(i, (&a, &d))| i != axis && a > d)
    {
        return mismatch(format!(
            "{what} {idx:?} must have data's rank and no axis but {axis} longer than data {data:?}"
        ));
    }
    Ok(())
}

/// GatherND / ScatterND: the tuple length `m` of indices `[batch.., q.., m]` into data
/// `[batch.., m dims.., rest..]`.
fn nd_tuple(batch_dims: usize, data: &[usize], idx: &[usize]) -> Result<usize, ShapeError> {
    let Some(&m) = idx.last() else {
        return mismatch("indices must have rank at least 1".into());
    };
    if batch_dims >= idx.len() || batch_dims > data.len() || data[..batch_dims] != idx[..batch_dims]
    {
        return mismatch(format!(
            "batch_dims {batch_dims}: the leading axes of data {data:?} and indices {idx:?} must agree, \
             and indices need an axis after them"
        ));
    }
    if m < 1 || batch_dims + m > data.len() {
        return mismatch(format!(
            "index tuples of length {m} do not fit data {data:?} after {batch_dims} batch axes"
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn run(op: IndexOp, args: &[ArrayD<f64>]) -> Vec<ArrayD<f64>> {
        let refs: Vec<&ArrayD<f64>> = args.iter().collect();
        op.eval(&refs).unwrap()
    }

    #[test]
    fn gather_elements_follows_the_spec_example() {
        // Operators.md GatherElements example 1: data [[1, 2], [3, 4]], indices [[0, 0], [1, 0]],
        // axis 1 -> [[1, 1], [4, 3]]; a negative index -1 names the last column.
        let data = array![[1.0, 2.0], [3.0, 4.0]].into_dyn();
        let idx = array![[0.0, 0.0], [-1.0, 0.0]].into_dyn();
        let out = run(IndexOp::GatherElements { axis: 1 }, &[data, idx]);
        assert_eq!(out[0], array![[1.0, 1.0], [4.0, 3.0]].into_dyn());
    }

    #[test]
    fn gather_nd_with_batch_dims() {
        // Operators.md GatherND example 5: batch_dims 1, data [[[0,1],[2,3]],[[4,5],[6,7]]],
        // indices [[1],[0]] -> [[2,3],[4,5]].
        let data =
            ArrayD::from_shape_vec(IxDyn(&[2, 2, 2]), (0..8).map(f64::from).collect()).unwrap();
        let idx = array![[1.0], [0.0]].into_dyn();
        let op = IndexOp::GatherNd { batch_dims: 1 };
        let ty = op
            .infer(&[
                &TensorType::new(DType::I32, &[2, 2, 2]),
                &TensorType::new(DType::I64, &[2, 1]),
            ])
            .unwrap();
        assert_eq!(ty[0].shape, vec![2, 2]);
        let out = run(op, &[data, idx]);
        assert_eq!(out[0], array![[2.0, 3.0], [4.0, 5.0]].into_dyn());
    }

    #[test]
    fn scatter_elements_reductions() {
        // Operators.md ScatterElements example 2 with reduction add and a duplicate index:
        // data [[1, 2, 3, 4, 5]], indices [[1, 1]], updates [[1.1, 2.1]] -> 2 + 1.1 + 2.1.
        let data = array![[1.0, 2.0, 3.0, 4.0, 5.0]].into_dyn();
        let idx = array![[1.0, 1.0]].into_dyn();
        let upd = array![[1.1, 2.1]].into_dyn();
        let op = |reduction| IndexOp::ScatterElements { axis: 1, reduction };
        let add = run(
            op(ScatterReduction::Add),
            &[data.clone(), idx.clone(), upd.clone()],
        );
        assert_eq!(add[0][[0, 1]], 2.0 + 1.1 + 2.1);
        let max = run(
            op(ScatterReduction::Max),
            &[data.clone(), idx.clone(), upd.clone()],
        );
        assert_eq!(max[0][[0, 1]], 2.1);
        // none: the later update wins; -4 is column 1 of 5.
        let idx = array![[-4.0, 1.0]].into_dyn();
        let none = run(op(ScatterReduction::None), &[data, idx, upd]);
        assert_eq!(none[0], array![[1.0, 2.1, 3.0, 4.0, 5.0]].into_dyn());
    }

    #[test]
    fn scatter_nd_replaces_slices() {
        // data zeros [3, 2]; indices [[2], [0]]; updates [[1, 2], [3, 4]] -> rows 2 and 0.
        let data = ArrayD::zeros(IxDyn(&[3, 2]));
        let idx = array![[2.0], [0.0]].into_dyn();
        let upd = array![[1.0, 2.0], [3.0, 4.0]].into_dyn();
        let out = run(
            IndexOp::ScatterNd {
                reduction: ScatterReduction::Mul,
            },
            &[data.clone(), idx.clone(), upd.clone()],
        );
        assert!(out[0].iter().all(|&v| v == 0.0));
        let out = run(
            IndexOp::ScatterNd {
                reduction: ScatterReduction::None,
            },
            &[data, idx, upd],
        );
        assert_eq!(
            out[0],
            array![[3.0, 4.0], [0.0, 0.0], [1.0, 2.0]].into_dyn()
        );
    }

    #[test]
    fn top_k_breaks_ties_by_lower_index() {
        let x = array![[0.0, 1.0, 1.0, 3.0], [5.0, 5.0, 5.0, 2.0]].into_dyn();
        let op = IndexOp::TopK {
            axis: 1,
            k: 3,
            largest: true,
            sorted: true,
        };
        let out = run(op, std::slice::from_ref(&x));
        assert_eq!(out[0], array![[3.0, 1.0, 1.0], [5.0, 5.0, 5.0]].into_dyn());
        assert_eq!(out[1], array![[3.0, 1.0, 2.0], [0.0, 1.0, 2.0]].into_dyn());
        let out = run(
            IndexOp::TopK {
                axis: 1,
                k: 2,
                largest: false,
                sorted: true,
            },
            &[x],
        );
        assert_eq!(out[1], array![[0.0, 1.0], [3.0, 0.0]].into_dyn());
    }

    #[test]
    fn out_of_range_indices_are_errors() {
        let data = array![[1.0, 2.0]].into_dyn();
        let idx = array![[2.0]].into_dyn();
        assert!(
            IndexOp::GatherElements { axis: 1 }
                .eval(&[&data, &idx])
                .is_err()
        );
    }
}
