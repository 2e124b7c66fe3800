//! Reductions over a set of axes (`ReduceSum`, `ReduceMax`, `ReduceL2`, ...): the operator's
//! attributes, its shape rule and its reference semantics.
//!
//! The importer resolves every opset's spelling (axes as attribute or input, empty axes meaning
//! "all" or "none") to a [`ReduceSpec`] with explicit, sorted, non-negative axes.

use super::TensorType;
use super::ops::ShapeError;
use ndarray::{ArrayD, IxDyn};

/// How the elements of one reduced group combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// sum x
    Sum,
    /// sum x / n
    Mean,
    /// max x
    Max,
    /// min x
    Min,
    /// prod x
    Prod,
    /// sum |x|
    L1,
    /// sqrt(sum x^2)
    L2,
    /// ln(sum x)
    LogSum,
    /// ln(sum e^x)
    LogSumExp,
    /// sum x^2
    SumSquare,
    /// Index of the largest element (the last of equal ones when `last`), as int64.
    ArgMax {
        /// `select_last_index`.
        last: bool,
    },
    /// Index of the smallest element (the last of equal ones when `last`), as int64.
    ArgMin {
        /// `select_last_index`.
        last: bool,
    },
}

impl ReduceKind {
    /// The ONNX operator name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::LogSum => "ReduceLogSum",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
            ReduceKind::SumSquare => "ReduceSumSquare",
            ReduceKind::ArgMax { .. } => "ArgMax",
            ReduceKind::ArgMin { .. } => "ArgMin",
        }
    }

    /// Combines one group. An empty group gives the operation's identity (0 for sums, 1 for
    /// the product, -inf for max / log-sums, +inf for min), as ReduceX-18 specifies for empty
    /// reductions; the mean of nothing is NaN.
    pub fn combine(self, xs: &[f64]) -> f64 {
        let sum = |f: fn(f64) -> f64| xs.iter().map(|&x| f(x)).sum::<f64>();
        match self {
            ReduceKind::Sum => sum(|x| x),
            ReduceKind::Mean => sum(|x| x) / xs.len() as f64,
            ReduceKind::Max => xs.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x)),
            ReduceKind::Min => xs.iter().fold(f64::INFINITY, |m, &x| m.min(x)),
            ReduceKind::Prod => xs.iter().product(),
            ReduceKind::L1 => sum(f64::abs),
            ReduceKind::L2 => sum(|x| x * x).sqrt(),
            ReduceKind::LogSum => sum(|x| x).ln(),
            ReduceKind::LogSumExp => {
                let m = ReduceKind::Max.combine(xs);
                if m.is_infinite() {
                    return m;
                }
                m + xs.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
            }
            ReduceKind::SumSquare => sum(|x| x * x),
            ReduceKind::ArgMax { last } | ReduceKind::ArgMin { last } => {
                let better = |a: f64, b: f64| match self {
                    ReduceKind::ArgMax { .. } => a > b || (last && a == b),
                    _ => a < b || (last && a == b),
                };
                let mut best = 0;
                for (i, &x) in xs.iter().enumerate().skip(1) {
                    if better(x, xs[best]) {
                        best = i;
                    }
                }
                best as f64
            }
        }
    }
}

/// A reduction: `kind` over `axes`, which are kept as size 1 when `keepdims`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReduceSpec {
    /// How a group combines.
    pub kind: ReduceKind,
    /// The reduced axes: sorted, distinct, non-negative. Never empty after import (an empty
    /// no-op reduction is imported as Identity).
    pub axes: Vec<usize>,
    /// Keep reduced axes as size 1.
    pub keepdims: bool,
}

impl ReduceSpec {
    /// The result type for an input of type `x`.
    pub fn infer(&self, x: &TensorType) -> Result<TensorType, ShapeError> {
        let rank = x.shape.len();
        if let Some(&a) = self.axes.iter().find(|&&a| a >= rank) {
            return Err(ShapeError::Mismatch(format!(
                "reduced axis {a} out of range for rank {rank}"
            )));
        }
        let shape = x
            .shape
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| match (self.axes.contains(&i), self.keepdims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let dtype = match self.kind {
            ReduceKind::ArgMax { .. } | ReduceKind::ArgMin { .. } => crate::dtype::DType::I64,
            _ => x.dtype,
        };
        Ok(TensorType { dtype, shape })
    }

    /// The permutation that moves the kept axes first and the reduced axes last (both in
    /// order), and the resulting `[rows, cols]` (kept elements, reduced group size).
    pub fn rows_last(&self, shape: &[usize]) -> (Vec<usize>, usize, usize) {
        let kept = (0..shape.len()).filter(|i| !self.axes.contains(i));
        let perm: Vec<usize> = kept.chain(self.axes.iter().copied()).collect();
        let cols: usize = self.axes.iter().map(|&a| shape[a]).product();
        let rows: usize = (0..shape.len())
            .filter(|i| !self.axes.contains(i))
            .map(|i| shape[i])
            .product();
        (perm, rows, cols)
    }

    /// Reference semantics on f64 (result not yet rounded to the dtype).
    pub fn eval(&self, x: &ArrayD<f64>) -> Result<ArrayD<f64>, String> {
        let (perm, rows, cols) = self.rows_last(x.shape());
        let moved = x.clone().permuted_axes(IxDyn(&perm));
        let flat: Vec<f64> = moved.iter().copied().collect();
        let out: Vec<f64> = (0..rows)
            .map(|r| self.kind.combine(&flat[r * cols..(r + 1) * cols]))
            .collect();
        let shape = self
            .infer(&TensorType {
                dtype: crate::dtype::DType::F32,
                shape: x.shape().to_vec(),
            })
            .map_err(|e| e.to_string())?
            .shape;
        ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| e.to_string())
    }

    /// The attributes as the graph printer shows them.
    pub fn attributes(&self) -> String {
        format!("axes={:?}, keepdims={}", self.axes, self.keepdims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn run(kind: ReduceKind, axes: &[usize], keepdims: bool, x: ArrayD<f64>) -> ArrayD<f64> {
        ReduceSpec {
            kind,
            axes: axes.to_vec(),
            keepdims,
        }
        .eval(&x)
        .unwrap()
    }

    #[test]
    fn sums_over_the_middle_axis() {
        // x[i, j, k] = 4i + 2j + k over [2, 2, 2]: summing j gives 2 * (4i + k) + 2.
        let x = ArrayD::from_shape_vec(IxDyn(&[2, 2, 2]), (0..8).map(f64::from).collect()).unwrap();
        let y = run(ReduceKind::Sum, &[1], false, x);
        assert_eq!(y, array![[2.0, 4.0], [10.0, 12.0]].into_dyn());
    }

    #[test]
    fn l2_and_log_sum_exp_with_keepdims() {
        let x = array![[3.0, 4.0], [0.0, 0.0]].into_dyn();
        let y = run(ReduceKind::L2, &[1], true, x.clone());
        assert_eq!(y, array![[5.0], [0.0]].into_dyn());
        // ln(e^0 + e^0) = ln 2 for the second row.
        let y = run(
            ReduceKind::LogSumExp,
            &[0, 1],
            false,
            array![[0.0, 0.0]].into_dyn(),
        );
        assert!((y[[]] - 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn arg_max_and_min_pick_the_first_or_last_tie() {
        let x = array![[1.0, 3.0, 3.0], [2.0, 0.0, 0.0]].into_dyn();
        let first = run(ReduceKind::ArgMax { last: false }, &[1], false, x.clone());
        assert_eq!(first, array![1.0, 0.0].into_dyn());
        let last = run(ReduceKind::ArgMin { last: true }, &[1], true, x);
        assert_eq!(last, array![[0.0], [2.0]].into_dyn());
    }

    #[test]
    fn empty_groups_give_the_identity() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
        assert_eq!(
            run(ReduceKind::Sum, &[1], false, x.clone()),
            array![0.0, 0.0].into_dyn()
        );
        assert_eq!(
            run(ReduceKind::Prod, &[1], false, x.clone()),
            array![1.0, 1.0].into_dyn()
        );
        let m = run(ReduceKind::Max, &[1], false, x);
        assert!(m.iter().all(|v| *v == f64::NEG_INFINITY));
    }
}
