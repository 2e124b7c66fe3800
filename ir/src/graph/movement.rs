//! Data-movement operators whose result elements are input elements picked axis by axis
//! (`Slice`, `Expand`, `Tile`, `Pad`): their normalised attributes, shape rules and meaning.
//!
//! Every one of them is described the same way: for each result axis, a map from the result
//! index to an input index along that axis, or to "fill" (Pad's constant). A result element
//! takes the input element at the mapped index of every axis, or the fill value when any axis
//! maps to fill. [`MovementOp::axis_maps`] is that description; the evaluator reads it, and the
//! lowering turns the same maps into strided DMAs, so both agree by construction.
//!
//! The importer resolves every opset's spelling (attributes or inputs, negative and clamped
//! starts and ends, `axes` subsets) to the explicit per-axis form held here.

use super::TensorType;
use super::ops::{ShapeError, broadcast_shapes};
use ndarray::{ArrayD, IxDyn};

/// What one result index along one axis reads.
pub type AxisMap = Vec<Option<usize>>;

/// One axis of a [`MovementOp::Slice`]: the result takes `len` indices starting at `start`,
/// `step` apart (`step` may be negative; it is never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AxisSlice {
    /// First input index taken (meaningful when `len > 0`).
    pub start: usize,
    /// Distance between consecutive taken indices.
    pub step: i64,
    /// Number of indices taken.
    pub len: usize,
}

/// How Pad fills the border (Operators.md, Pad-19: `constant`, `reflect`, `edge`, `wrap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    /// The constant value (second operand, 0 without one).
    Constant,
    /// Mirror without repeating the edge element (numpy `reflect`).
    Reflect,
    /// Repeat the edge element.
    Edge,
    /// Continue periodically from the other end.
    Wrap,
}

impl PadMode {
    /// The ONNX spelling of the mode.
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
            PadMode::Wrap => "wrap",
        }
    }
}

/// A data-movement operator of [`super::GraphOp::Movement`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MovementOp {
    /// One [`AxisSlice`] per input axis.
    Slice(Vec<AxisSlice>),
    /// numpy broadcast of the input to `shape` (the result shape, already broadcast with the
    /// input's at import).
    Expand {
        /// The result shape.
        shape: Vec<usize>,
    },
    /// The input repeated `repeats[i]` times along axis `i`.
    Tile {
        /// Repetitions per axis (one per input axis).
        repeats: Vec<usize>,
    },
    /// `pads[i] = (before, after)` elements added (removed when negative) at each end of axis
    /// `i`. Negative pads crop first; the border is then filled per `mode` from the cropped
    /// input. An optional second operand holds the constant (one element of the input's type).
    Pad {
        /// Fill mode.
        mode: PadMode,
        /// Per axis `(before, after)`.
        pads: Vec<(i64, i64)>,
    },
}

impl MovementOp {
    /// The ONNX operator name.
    pub fn name(&self) -> &'static str {
        match self {
            MovementOp::Slice(_) => "Slice",
            MovementOp::Expand { .. } => "Expand",
            MovementOp::Tile { .. } => "Tile",
            MovementOp::Pad { .. } => "Pad",
        }
    }

    /// Attributes for the graph printer.
    pub fn attributes(&self) -> String {
        match self {
            MovementOp::Slice(axes) => {
                let parts: Vec<String> = axes
                    .iter()
                    .map(|a| format!("{}:{}:{}", a.start, a.step, a.len))
                    .collect();
                format!("start:step:len=[{}]", parts.join(", "))
            }
            MovementOp::Expand { shape } => format!("shape={shape:?}"),
            MovementOp::Tile { repeats } => format!("repeats={repeats:?}"),
            MovementOp::Pad { mode, pads } => format!("mode={}, pads={pads:?}", mode.name()),
        }
    }

    /// The result type for these operand types.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<TensorType, ShapeError> {
        let max_inputs = if matches!(self, MovementOp::Pad { .. }) {
            2
        } else {
            1
        };
        if inputs.is_empty() || inputs.len() > max_inputs {
            return Err(ShapeError::Arity {
                expected: if max_inputs == 2 { "1 or 2" } else { "1" },
                got: inputs.len(),
            });
        }
        let x = inputs[0];
        let rank_must_be = |n: usize, what: &str| {
            if n == x.shape.len() {
                Ok(())
            } else {
                Err(ShapeError::Mismatch(format!(
                    "{what} has {n} entries but the input {:?} has rank {}",
                    x.shape,
                    x.shape.len()
                )))
            }
        };
        let shape = match self {
            MovementOp::Slice(axes) => {
                rank_must_be(axes.len(), "the slice")?;
                for (i, (a, &n)) in axes.iter().zip(&x.shape).enumerate() {
                    if a.step == 0 {
                        return Err(ShapeError::Mismatch(format!("axis {i} has step 0")));
                    }
                    let last = a.start as i128 + (a.len as i128 - 1) * a.step as i128;
                    if a.len > 0 && (a.start >= n || last < 0 || last >= n as i128) {
                        return Err(ShapeError::Mismatch(format!(
                            "axis {i}: {} indices from {} by {} leave 0..{n}",
                            a.len, a.start, a.step
                        )));
                    }
                }
                axes.iter().map(|a| a.len).collect()
            }
            MovementOp::Expand { shape } => {
                let b = broadcast_shapes(&x.shape, shape)?;
                if &b != shape {
                    return Err(ShapeError::Mismatch(format!(
                        "{:?} does not broadcast to {shape:?} (it gives {b:?})",
                        x.shape
                    )));
                }
                shape.clone()
            }
            MovementOp::Tile { repeats } => {
                rank_must_be(repeats.len(), "repeats")?;
                x.shape
                    .iter()
                    .zip(repeats)
                    .map(|(&n, &r)| {
                        n.checked_mul(r).ok_or_else(|| {
                            ShapeError::Mismatch(format!("{n} x {r} repeats is too large"))
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            MovementOp::Pad { mode, pads } => {
                rank_must_be(pads.len(), "pads")?;
                if let Some(v) = inputs.get(1) {
                    if v.dtype != x.dtype || v.elems() != 1 {
                        return Err(ShapeError::Mismatch(format!(
                            "the constant must be one element of {}, it is {v}",
                            x.dtype
                        )));
                    }
                    if *mode != PadMode::Constant {
                        return Err(ShapeError::Mismatch(format!(
                            "a constant is given but the mode is {}",
                            mode.name()
                        )));
                    }
                }
                let mut shape = Vec::with_capacity(pads.len());
                for (i, (&(b, e), &n)) in pads.iter().zip(&x.shape).enumerate() {
                    let (lo, hi) = pad_crop(n, b, e);
                    let total = n as i128 + b as i128 + e as i128;
                    if total < 0 || lo > hi {
                        return Err(ShapeError::Mismatch(format!(
                            "axis {i} of size {n} cannot be padded by ({b}, {e})"
                        )));
                    }
                    if *mode != PadMode::Constant && lo == hi && total > 0 {
                        return Err(ShapeError::Mismatch(format!(
                            "axis {i}: {} padding needs a non-empty axis to read from",
                            mode.name()
                        )));
                    }
                    shape.push(usize::try_from(total).map_err(|_| {
                        ShapeError::Mismatch(format!("axis {i}: the padded size is too large"))
                    })?);
                }
                shape
            }
        };
        Ok(TensorType {
            dtype: x.dtype,
            shape,
        })
    }

    /// For each result axis, the input index each result index reads (`None`: the fill
    /// value). `in_shape` is the input's shape; for Expand it is right-aligned with the result
    /// (missing leading axes have size 1). The op must fit `in_shape` ([`Self::infer`]).
    pub fn axis_maps(&self, in_shape: &[usize]) -> Vec<AxisMap> {
        match self {
            MovementOp::Slice(axes) => axes
                .iter()
                .map(|a| {
                    (0..a.len)
                        .map(|k| Some((a.start as i64 + k as i64 * a.step) as usize))
                        .collect()
                })
                .collect(),
            MovementOp::Expand { shape } => {
                let aligned = right_aligned(in_shape, shape.len());
                aligned
                    .iter()
                    .zip(shape)
                    .map(|(&n, &m)| (0..m).map(|o| Some(if n == 1 { 0 } else { o })).collect())
                    .collect()
            }
            MovementOp::Tile { repeats } => in_shape
                .iter()
                .zip(repeats)
                .map(|(&n, &r)| (0..n * r).map(|o| Some(o % n)).collect())
                .collect(),
            MovementOp::Pad { mode, pads } => in_shape
                .iter()
                .zip(pads)
                .map(|(&n, &(b, e))| pad_axis_map(*mode, n, b, e))
                .collect(),
        }
    }

    /// The meaning: `args[0]` is the input, `args[1]` Pad's optional constant.
    pub fn eval(&self, args: &[&ArrayD<f64>]) -> Result<ArrayD<f64>, String> {
        let x = args[0];
        let fill = args.get(1).and_then(|v| v.iter().next().copied());
        let maps = self.axis_maps(x.shape());
        let out_shape: Vec<usize> = maps.iter().map(Vec::len).collect();
        // Expand may add leading axes: view the input with the result's rank.
        let aligned = right_aligned(x.shape(), out_shape.len());
        let xa = x
            .view()
            .into_shape_with_order(IxDyn(&aligned))
            .map_err(|e| e.to_string())?;
        let mut at = vec![0usize; out_shape.len()];
        Ok(ArrayD::from_shape_fn(IxDyn(&out_shape), |idx| {
            for (k, m) in maps.iter().enumerate() {
                match m[idx[k]] {
                    Some(i) => at[k] = i,
                    None => return fill.unwrap_or(0.0),
                }
            }
            xa[IxDyn(&at)]
        }))
    }
}

/// `shape` with leading 1s up to `rank`.
pub fn right_aligned(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut s = vec![1; rank.saturating_sub(shape.len())];
    s.extend_from_slice(shape);
    s
}

/// The input range `lo..hi` left after the negative pads of an axis of size `n` crop it.
fn pad_crop(n: usize, before: i64, after: i64) -> (usize, usize) {
    let lo = before.min(0).unsigned_abs().min(n as u64) as usize;
    let hi = (n as i128 + i128::from(after.min(0))).max(0) as usize;
    (lo, hi)
}

/// One padded axis: result index `o` reads cropped index `o - max(before, 0)` when inside the
/// cropped input, else the mode's border rule applied to it (ONNX Pad; numpy.pad's modes).
fn pad_axis_map(mode: PadMode, n: usize, before: i64, after: i64) -> AxisMap {
    let (lo, hi) = pad_crop(n, before, after);
    let m = (hi - lo) as i64;
    let total = (n as i64 + before + after).max(0);
    let pre = before.max(0);
    (0..total)
        .map(|o| {
            let j = o - pre;
            let k = if (0..m).contains(&j) {
                j
            } else {
                match mode {
                    PadMode::Constant => return None,
                    PadMode::Edge => j.clamp(0, m - 1),
                    PadMode::Wrap => j.rem_euclid(m),
                    PadMode::Reflect if m == 1 => 0,
                    PadMode::Reflect => {
                        // Mirror images repeat with period 2(m - 1).
                        let p = 2 * (m - 1);
                        let r = j.rem_euclid(p);
                        if r < m { r } else { p - r }
                    }
                }
            };
            Some(lo + k as usize)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn arr(shape: &[usize]) -> ArrayD<f64> {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f64).collect()).unwrap()
    }

    fn vals(a: &ArrayD<f64>) -> Vec<f64> {
        a.iter().copied().collect()
    }

    #[test]
    fn slice_with_negative_steps() {
        // x = [[0..5], [5..10], [10..15]]; rows 2, 0 (step -2) and columns 4, 3, 2.
        let op = MovementOp::Slice(vec![
            AxisSlice {
                start: 2,
                step: -2,
                len: 2,
            },
            AxisSlice {
                start: 4,
                step: -1,
                len: 3,
            },
        ]);
        let y = op.eval(&[&arr(&[3, 5])]).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(vals(&y), [14.0, 13.0, 12.0, 4.0, 3.0, 2.0]);
        let t = TensorType::new(DType::F32, &[3, 5]);
        assert!(op.infer(&[&t]).is_ok());
        let bad = MovementOp::Slice(vec![
            AxisSlice {
                start: 2,
                step: -2,
                len: 3,
            },
            AxisSlice {
                start: 0,
                step: 1,
                len: 5,
            },
        ]);
        assert!(bad.infer(&[&t]).is_err());
    }

    #[test]
    fn expand_and_tile() {
        // [3, 1] expanded to [2, 3, 2]: each row value repeated along the new axes.
        let op = MovementOp::Expand {
            shape: vec![2, 3, 2],
        };
        let y = op.eval(&[&arr(&[3, 1])]).unwrap();
        assert_eq!(vals(&y), [0., 0., 1., 1., 2., 2., 0., 0., 1., 1., 2., 2.]);
        // [3, 2] broadcasts to [2, 3, 2]; [3, 4] does not, and [2, 3, 2] cannot shrink to it.
        let ok = TensorType::new(DType::I64, &[3, 2]);
        assert_eq!(op.infer(&[&ok]).unwrap().shape, [2, 3, 2]);
        assert!(op.infer(&[&TensorType::new(DType::I64, &[3, 4])]).is_err());
        let wider = TensorType::new(DType::I64, &[4, 3, 2]);
        assert!(op.infer(&[&wider]).is_err());
        // [[0, 1], [2, 3]] tiled (2, 1) = rows 0 1 0 1; tiled (1, 2) repeats within each row.
        let y = MovementOp::Tile {
            repeats: vec![2, 1],
        }
        .eval(&[&arr(&[2, 2])])
        .unwrap();
        assert_eq!(vals(&y), [0., 1., 2., 3., 0., 1., 2., 3.]);
        let y = MovementOp::Tile {
            repeats: vec![1, 2],
        }
        .eval(&[&arr(&[2, 2])])
        .unwrap();
        assert_eq!(vals(&y), [0., 1., 0., 1., 2., 3., 2., 3.]);
    }

    #[test]
    fn pad_modes_match_numpy() {
        // np.pad(np.arange(4), (3, 2), mode) for each mode; constant uses the second operand.
        let x = arr(&[4]);
        let pad = |mode| MovementOp::Pad {
            mode,
            pads: vec![(3, 2)],
        };
        let c = ArrayD::from_elem(IxDyn(&[]), 9.0);
        assert_eq!(
            vals(&pad(PadMode::Constant).eval(&[&x, &c]).unwrap()),
            [9., 9., 9., 0., 1., 2., 3., 9., 9.]
        );
        assert_eq!(
            vals(&pad(PadMode::Reflect).eval(&[&x]).unwrap()),
            [3., 2., 1., 0., 1., 2., 3., 2., 1.]
        );
        assert_eq!(
            vals(&pad(PadMode::Edge).eval(&[&x]).unwrap()),
            [0., 0., 0., 0., 1., 2., 3., 3., 3.]
        );
        assert_eq!(
            vals(&pad(PadMode::Wrap).eval(&[&x]).unwrap()),
            [1., 2., 3., 0., 1., 2., 3., 0., 1.]
        );
        // Reflecting past a whole period: np.pad(np.arange(3), (5, 0), 'reflect').
        let y = MovementOp::Pad {
            mode: PadMode::Reflect,
            pads: vec![(5, 0)],
        }
        .eval(&[&arr(&[3])])
        .unwrap();
        assert_eq!(vals(&y), [1., 0., 1., 2., 1., 0., 1., 2.]);
    }

    #[test]
    fn negative_pads_crop() {
        // Crop one at the front, pad two zeros at the back: [1, 2, 3, 0, 0].
        let op = MovementOp::Pad {
            mode: PadMode::Constant,
            pads: vec![(-1, 2)],
        };
        assert_eq!(vals(&op.eval(&[&arr(&[4])]).unwrap()), [1., 2., 3., 0., 0.]);
        let t = TensorType::new(DType::F32, &[4]);
        assert_eq!(op.infer(&[&t]).unwrap().shape, [5]);
        let too_much = MovementOp::Pad {
            mode: PadMode::Constant,
            pads: vec![(-3, -2)],
        };
        assert!(too_much.infer(&[&t]).is_err());
        // Edge padding of a cropped axis repeats the new edge: crop [0] then edge-pad 2.
        let op = MovementOp::Pad {
            mode: PadMode::Edge,
            pads: vec![(-1, 2)],
        };
        assert_eq!(vals(&op.eval(&[&arr(&[4])]).unwrap()), [1., 2., 3., 3., 3.]);
    }
}
