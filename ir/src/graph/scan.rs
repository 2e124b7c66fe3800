//! `Scan`: running sums or products along one axis (ONNX CumSum and CumProd), with their
//! `exclusive` and `reverse` variants. The importer turns float CumSum into a matmul with a
//! triangular matrix instead; this operator is for what must be computed step by step: exact
//! integer scans, and products, which have no matmul form.

use super::TensorType;
use super::ops::ShapeError;
use ndarray::{ArrayD, Axis};

/// What a scan accumulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanKind {
    /// Running sum (CumSum); the empty sum is 0.
    Sum,
    /// Running product (CumProd); the empty product is 1.
    Prod,
}

impl ScanKind {
    /// The ONNX operator name.
    pub fn name(self) -> &'static str {
        match self {
            ScanKind::Sum => "CumSum",
            ScanKind::Prod => "CumProd",
        }
    }

    /// The value of the empty scan (the first result of an exclusive one).
    pub fn identity(self) -> f64 {
        match self {
            ScanKind::Sum => 0.0,
            ScanKind::Prod => 1.0,
        }
    }

    /// Combines the running value with the next element.
    pub fn combine(self, acc: f64, x: f64) -> f64 {
        match self {
            ScanKind::Sum => acc + x,
            ScanKind::Prod => acc * x,
        }
    }
}

/// A scan along one axis.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScanSpec {
    /// Sum or product.
    pub kind: ScanKind,
    /// The axis, non-negative.
    pub axis: usize,
    /// Result `i` leaves out element `i` (so the first result is the identity).
    pub exclusive: bool,
    /// Accumulate from the last element towards the first.
    pub reverse: bool,
}

impl ScanSpec {
    /// The result type: the input's.
    pub fn infer(&self, x: &TensorType) -> Result<TensorType, ShapeError> {
        if self.axis >= x.shape.len() {
            return Err(ShapeError::Mismatch(format!(
                "axis {} is out of range for shape {:?}",
                self.axis, x.shape
            )));
        }
        Ok(x.clone())
    }

    /// The reference semantics, in f64 (the evaluator rounds the result to the dtype once).
    pub fn eval(&self, x: &ArrayD<f64>) -> ArrayD<f64> {
        let mut y = x.clone();
        for mut lane in y.lanes_mut(Axis(self.axis)) {
            let n = lane.len();
            let mut acc = self.kind.identity();
            for k in 0..n {
                let i = if self.reverse { n - 1 - k } else { k };
                let v = lane[i];
                if self.exclusive {
                    lane[i] = acc;
                    acc = self.kind.combine(acc, v);
                } else {
                    acc = self.kind.combine(acc, v);
                    lane[i] = acc;
                }
            }
        }
        y
    }

    /// The attributes as the graph printer shows them.
    pub fn attributes(&self) -> String {
        format!(
            "axis={}, exclusive={}, reverse={}",
            self.axis, self.exclusive, self.reverse
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn scans_of_a_matrix_along_each_axis() {
        // [[1, 2, 3], [4, 5, 6]]: running sums along rows are [1, 3, 6], [4, 9, 15]; exclusive
        // reverse products down the columns are [4, 5, 6] then the identity row.
        let x = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let sum = ScanSpec {
            kind: ScanKind::Sum,
            axis: 1,
            exclusive: false,
            reverse: false,
        };
        assert_eq!(
            sum.eval(&x).iter().copied().collect::<Vec<_>>(),
            [1., 3., 6., 4., 9., 15.]
        );
        let prod = ScanSpec {
            kind: ScanKind::Prod,
            axis: 0,
            exclusive: true,
            reverse: true,
        };
        assert_eq!(
            prod.eval(&x).iter().copied().collect::<Vec<_>>(),
            [4., 5., 6., 1., 1., 1.]
        );
    }
}
