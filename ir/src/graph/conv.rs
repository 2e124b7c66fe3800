//! Convolution and pooling over the spatial axes of `[N, C, spatial...]` tensors: `Conv`,
//! `ConvTranspose` ([`ConvSpec`]) and `MaxPool`, `AveragePool`, `LpPool` ([`PoolSpec`]), with
//! their shape rules and reference semantics (onnx/docs/Operators.md, sections Conv,
//! ConvTranspose, MaxPool, AveragePool, LpPool).
//!
//! The importer resolves `auto_pad`, `output_shape` and `output_padding` to explicit begin/end
//! pads, so the specs carry only what the arithmetic needs. Up to three spatial axes are
//! supported (the node tests use 1-D, 2-D and 3-D).

use super::TensorType;
use super::ops::ShapeError;
use crate::dtype::DType;
use ndarray::{ArrayD, IxDyn};

/// At most this many spatial axes.
pub const MAX_SPATIAL: usize = 3;

/// `Conv` or `ConvTranspose` with resolved attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSpec {
    /// `ConvTranspose` (weights `[C_in, C_out / group, k...]`) rather than `Conv` (weights
    /// `[C_out, C_in / group, k...]`).
    pub transpose: bool,
    /// Stride per spatial axis.
    pub strides: Vec<usize>,
    /// Kernel dilation per spatial axis.
    pub dilations: Vec<usize>,
    /// Padding before each spatial axis. For `ConvTranspose` it is removed from the full
    /// output and may be negative (an `output_shape` larger than the full output).
    pub pads_begin: Vec<i64>,
    /// Padding after each spatial axis; for `ConvTranspose` minus `output_padding`.
    pub pads_end: Vec<i64>,
    /// Channel groups.
    pub group: usize,
}

/// Output extent of a convolution along one axis: `floor((i + pads - ((k - 1) d + 1)) / s) + 1`.
pub fn conv_out_len(i: usize, k: usize, s: usize, d: usize, pb: i64, pe: i64) -> Option<usize> {
    let span = (k as i64 - 1) * d as i64 + 1;
    let room = i as i64 + pb + pe - span;
    (room >= 0 && s > 0).then(|| (room / s as i64) as usize + 1)
}

/// Output extent of a transposed convolution: `s (i - 1) + (k - 1) d + 1 - pads`.
pub fn conv_transpose_out_len(
    i: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: i64,
    pe: i64,
) -> Option<usize> {
    let full = s as i64 * (i as i64 - 1) + (k as i64 - 1) * d as i64 + 1;
    let out = full - pb - pe;
    (out > 0).then_some(out as usize)
}

impl ConvSpec {
    fn check_lens(&self, n: usize) -> Result<(), ShapeError> {
        if n == 0 || n > MAX_SPATIAL {
            return Err(ShapeError::Mismatch(format!(
                "{n} spatial axes; 1 to {MAX_SPATIAL} are supported"
            )));
        }
        let lens = [
            self.strides.len(),
            self.dilations.len(),
            self.pads_begin.len(),
            self.pads_end.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(ShapeError::Mismatch(format!(
                "strides, dilations and pads must have one entry per spatial axis ({n})"
            )));
        }
        if self.strides.contains(&0) || self.dilations.contains(&0) || self.group == 0 {
            return Err(ShapeError::Mismatch(
                "strides, dilations and group must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The result type for `x`, `w` and optionally `b`.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<TensorType, ShapeError> {
        if inputs.len() < 2 || inputs.len() > 3 {
            return Err(ShapeError::Arity {
                expected: "2 or 3",
                got: inputs.len(),
            });
        }
        let (x, w) = (&inputs[0].shape, &inputs[1].shape);
        if x.len() < 3 || w.len() != x.len() {
            return Err(ShapeError::Mismatch(format!(
                "input {x:?} and weights {w:?} must have the same rank, at least 3"
            )));
        }
        let dtype = inputs[0].dtype;
        if inputs.iter().any(|t| t.dtype != dtype) || !dtype.is_float() {
            return Err(ShapeError::Mismatch(
                "operands must share one float dtype".into(),
            ));
        }
        let n = x.len() - 2;
        self.check_lens(n)?;
        let g = self.group;
        let (c_in, c_out) = if self.transpose {
            (w[0], w[1] * g)
        } else {
            (w[1] * g, w[0])
        };
        // Conv splits the C_out filters into groups; ConvTranspose the C_in ones.
        let per_group_ok = w[0] % g == 0;
        if x[1] != c_in || !per_group_ok || c_out == 0 {
            return Err(ShapeError::Mismatch(format!(
                "weights {w:?} with group {g} do not fit {} input channels",
                x[1]
            )));
        }
        if let Some(b) = inputs.get(2)
            && b.shape != [c_out]
        {
            return Err(ShapeError::Mismatch(format!(
                "bias {:?} must be [{c_out}]",
                b.shape
            )));
        }
        let mut shape = vec![x[0], c_out];
        for a in 0..n {
            let (i, k, s, d) = (x[a + 2], w[a + 2], self.strides[a], self.dilations[a]);
            let (pb, pe) = (self.pads_begin[a], self.pads_end[a]);
            let len = if self.transpose {
                conv_transpose_out_len(i, k, s, d, pb, pe)
            } else if pb < 0 || pe < 0 {
                None
            } else {
                conv_out_len(i, k, s, d, pb, pe)
            };
            shape.push(len.ok_or_else(|| {
                ShapeError::Mismatch(format!(
                    "spatial axis {a}: input {i}, kernel {k}, stride {s}, dilation {d}, \
                     pads {pb}/{pe} give an empty output"
                ))
            })?);
        }
        Ok(TensorType { dtype, shape })
    }

    /// Reference semantics (f64). `Conv`: `y[n, m, o] = b[m] + sum_{c, k} x[n, g C_g + c,
    /// o s + k d - pb] w[m, c, k]` over the group `g` of `m`; `ConvTranspose` scatters each
    /// input element: `y[n, g M_g + m, i s + k d - pb] += x[n, c, i] w[c, m, k]`.
    pub fn eval(&self, args: &[&ArrayD<f64>]) -> Result<ArrayD<f64>, String> {
        let types: Vec<TensorType> = args
            .iter()
            .map(|a| TensorType::new(DType::F32, a.shape()))
            .collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let out_shape = self.infer(&refs).map_err(|e| e.to_string())?.shape;
        let x = Spatial::new(args[0]);
        let w = Spatial::new(args[1]);
        let y_sp = Spatial::shape_of(&out_shape);
        let xv: Vec<f64> = args[0].iter().copied().collect();
        let wv: Vec<f64> = args[1].iter().copied().collect();
        let mut y = vec![0.0; out_shape.iter().product()];
        let n_sp = out_shape.len() - 2;
        let pad3 = |v: &[i64]| -> [i64; 3] {
            let mut o = [0; 3];
            o[3 - n_sp..].copy_from_slice(v);
            o
        };
        let one3 = |v: &[usize]| -> [usize; 3] {
            let mut o = [1; 3];
            o[3 - n_sp..].copy_from_slice(v);
            o
        };
        let (s, d, pb) = (
            one3(&self.strides),
            one3(&self.dilations),
            pad3(&self.pads_begin),
        );
        let g = self.group;
        let (batch, c_in, c_out) = (x.n, x.c, out_shape[1]);
        let (cg_in, cg_out) = (c_in / g, c_out / g);
        let taps = w.sp;
        for n in 0..batch {
            for gi in 0..g {
                for mo in 0..cg_out {
                    for ci in 0..cg_in {
                        let (xc, yc) = (gi * cg_in + ci, gi * cg_out + mo);
                        let wbase = if self.transpose {
                            (xc * w.c + mo) * w.plane()
                        } else {
                            (yc * w.c + ci) * w.plane()
                        };
                        let xbase = (n * c_in + xc) * x.plane();
                        let ybase = (n * c_out + yc) * y_sp.iter().product::<usize>();
                        for kd in 0..taps[0] {
                            for kh in 0..taps[1] {
                                for kw in 0..taps[2] {
                                    let wt = wv[wbase + (kd * taps[1] + kh) * taps[2] + kw];
                                    let k = [kd, kh, kw];
                                    if self.transpose {
                                        scatter(
                                            &mut y, ybase, y_sp, &xv, xbase, x.sp, k, s, d, pb, wt,
                                        );
                                    } else {
                                        gather(
                                            &mut y, ybase, y_sp, &xv, xbase, x.sp, k, s, d, pb, wt,
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(b) = args.get(2) {
            let plane: usize = y_sp.iter().product();
            for (i, v) in y.iter_mut().enumerate() {
                *v += b[[(i / plane) % c_out]];
            }
        }
        ArrayD::from_shape_vec(IxDyn(&out_shape), y).map_err(|e| e.to_string())
    }

    /// The attributes as the graph printer shows them.
    pub fn attributes(&self) -> String {
        format!(
            "transpose={}, strides={:?}, dilations={:?}, pads_begin={:?}, pads_end={:?}, group={}",
            self.transpose,
            self.strides,
            self.dilations,
            self.pads_begin,
            self.pads_end,
            self.group
        )
    }
}

/// `[N, C, spatial...]` with the spatial part as three axes (leading ones of size 1).
struct Spatial {
    n: usize,
    c: usize,
    sp: [usize; 3],
}

impl Spatial {
    fn shape_of(shape: &[usize]) -> [usize; 3] {
        let mut sp = [1; 3];
        let n = shape.len() - 2;
        sp[3 - n..].copy_from_slice(&shape[2..]);
        sp
    }

    fn new(a: &ArrayD<f64>) -> Self {
        let s = a.shape();
        Spatial {
            n: s[0],
            c: s[1],
            sp: Self::shape_of(s),
        }
    }

    fn plane(&self) -> usize {
        self.sp.iter().product()
    }
}

/// The input positions `o s + k d - pb` of output positions `o` along one axis, as the output
/// range whose inputs lie in `0..len` (and the input of its first element).
fn valid_range(out: usize, len: usize, k: usize, s: usize, d: usize, pb: i64) -> (usize, usize) {
    let off = (k * d) as i64 - pb;
    // o s + off >= 0  and  o s + off < len
    let lo = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(s)
    };
    let hi = if off >= len as i64 {
        0
    } else {
        ((len as i64 - off - 1) as usize / s + 1).min(out)
    };
    (lo.min(hi), hi)
}

/// One tap of a convolution: `y[o] += wt * x[o s + k d - pb]` for every output position.
#[allow(clippy::too_many_arguments)]
fn gather(
    y: &mut [f64],
    ybase: usize,
    ysp: [usize; 3],
    x: &[f64],
    xbase: usize,
    xsp: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
    d: [usize; 3],
    pb: [i64; 3],
    wt: f64,
) {
    let r: Vec<(usize, usize)> = (0..3)
        .map(|a| valid_range(ysp[a], xsp[a], k[a], s[a], d[a], pb[a]))
        .collect();
    let at = |a: usize, o: usize| (o * s[a] + k[a] * d[a]) as i64 - pb[a];
    for od in r[0].0..r[0].1 {
        let id = at(0, od) as usize;
        for oh in r[1].0..r[1].1 {
            let ih = at(1, oh) as usize;
            let yrow = ybase + (od * ysp[1] + oh) * ysp[2];
            let xrow = xbase + (id * xsp[1] + ih) * xsp[2];
            for ow in r[2].0..r[2].1 {
                let iw = at(2, ow) as usize;
                y[yrow + ow] += wt * x[xrow + iw];
            }
        }
    }
}

/// One tap of a transposed convolution: `y[i s + k d - pb] += wt * x[i]` for every input
/// position whose target lies inside the output.
#[allow(clippy::too_many_arguments)]
fn scatter(
    y: &mut [f64],
    ybase: usize,
    ysp: [usize; 3],
    x: &[f64],
    xbase: usize,
    xsp: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
    d: [usize; 3],
    pb: [i64; 3],
    wt: f64,
) {
    let at = |a: usize, i: usize| (i * s[a] + k[a] * d[a]) as i64 - pb[a];
    let inside = |a: usize, i: usize| {
        let o = at(a, i);
        o >= 0 && o < ysp[a] as i64
    };
    for id in (0..xsp[0]).filter(|&i| inside(0, i)) {
        let od = at(0, id) as usize;
        for ih in (0..xsp[1]).filter(|&i| inside(1, i)) {
            let oh = at(1, ih) as usize;
            let yrow = ybase + (od * ysp[1] + oh) * ysp[2];
            let xrow = xbase + (id * xsp[1] + ih) * xsp[2];
            for iw in (0..xsp[2]).filter(|&i| inside(2, i)) {
                y[yrow + at(2, iw) as usize] += wt * x[xrow + iw];
            }
        }
    }
}

/// How a pooling window combines.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolKind {
    /// The largest element of the window (padding never counts).
    Max,
    /// The mean; with `count_include_pad` the divisor counts the padding inside the padded
    /// extent, otherwise only the input elements.
    Avg {
        /// `count_include_pad`.
        count_include_pad: bool,
    },
    /// `(sum |x|^p)^(1/p)`; padding contributes zero.
    Lp {
        /// The exponent `p`.
        p: f64,
    },
}

/// `MaxPool`, `AveragePool` or `LpPool` with resolved attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSpec {
    /// How a window combines.
    pub kind: PoolKind,
    /// Window size per spatial axis.
    pub kernel: Vec<usize>,
    /// Stride per spatial axis.
    pub strides: Vec<usize>,
    /// Window dilation per spatial axis.
    pub dilations: Vec<usize>,
    /// Padding before each spatial axis.
    pub pads_begin: Vec<usize>,
    /// Padding after each spatial axis.
    pub pads_end: Vec<usize>,
    /// Round the output extent up; a window that would start in the end padding is dropped.
    pub ceil_mode: bool,
}

/// Output extent of a pool along one axis: `(i + pads - ((k - 1) d + 1)) / s + 1`, rounded down
/// (or up with `ceil_mode`, less one when the last window would start past the input and the
/// begin padding, the rule of MaxPool/AveragePool-22 and the ONNX reference).
pub fn pool_out_len(
    i: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pe: usize,
    ceil: bool,
) -> Option<usize> {
    let span = (k - 1) * d + 1;
    let room = (i + pb + pe).checked_sub(span)?;
    if s == 0 {
        return None;
    }
    let mut out = if ceil {
        room.div_ceil(s) + 1
    } else {
        room / s + 1
    };
    if ceil && (out - 1) * s >= i + pb {
        out -= 1;
    }
    Some(out)
}

impl PoolSpec {
    /// The output spatial extents for input extents `sp`.
    pub fn out_spatial(&self, sp: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let n = sp.len();
        if n == 0 || n > MAX_SPATIAL {
            return Err(ShapeError::Mismatch(format!(
                "{n} spatial axes; 1 to {MAX_SPATIAL} are supported"
            )));
        }
        let lens = [
            self.kernel.len(),
            self.strides.len(),
            self.dilations.len(),
            self.pads_begin.len(),
            self.pads_end.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(ShapeError::Mismatch(format!(
                "kernel, strides, dilations and pads must have one entry per spatial axis ({n})"
            )));
        }
        (0..n)
            .map(|a| {
                let (k, s, d) = (self.kernel[a], self.strides[a], self.dilations[a]);
                let (pb, pe) = (self.pads_begin[a], self.pads_end[a]);
                if k == 0 || d == 0 || pb > (k - 1) * d || pe > (k - 1) * d {
                    return Err(ShapeError::Mismatch(format!(
                        "axis {a}: kernel {k}, dilation {d} and pads {pb}/{pe} are invalid (pads \
                         must be smaller than the window)"
                    )));
                }
                pool_out_len(sp[a], k, s, d, pb, pe, self.ceil_mode).ok_or_else(|| {
                    ShapeError::Mismatch(format!(
                        "axis {a}: the window ({k}, dilation {d}) does not fit input {} with pads \
                         {pb}/{pe}",
                        sp[a]
                    ))
                })
            })
            .collect()
    }

    /// The result type for an input of type `x`.
    pub fn infer(&self, x: &TensorType) -> Result<TensorType, ShapeError> {
        if x.shape.len() < 3 {
            return Err(ShapeError::Mismatch(format!(
                "input {:?} must have rank at least 3",
                x.shape
            )));
        }
        if !matches!(self.kind, PoolKind::Max) && !x.dtype.is_float() {
            return Err(ShapeError::Mismatch(format!(
                "{} needs a float input, got {}",
                self.name(),
                x.dtype
            )));
        }
        let mut shape = x.shape[..2].to_vec();
        shape.extend(self.out_spatial(&x.shape[2..])?);
        Ok(TensorType {
            dtype: x.dtype,
            shape,
        })
    }

    /// The ONNX operator name.
    pub fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg { .. } => "AveragePool",
            PoolKind::Lp { .. } => "LpPool",
        }
    }

    /// The divisor of each output position of an average pool (row-major over the output
    /// spatial shape), counting the taps inside the input (or, with `count_include_pad`, inside
    /// the padded extent `-pb..i + pe`).
    pub fn avg_divisors(&self, in_sp: &[usize], out_sp: &[usize]) -> Vec<f64> {
        let include = matches!(
            self.kind,
            PoolKind::Avg {
                count_include_pad: true
            }
        );
        // Per axis and output position: how many taps land in the counted range.
        let per_axis: Vec<Vec<usize>> = (0..in_sp.len())
            .map(|a| {
                let (lo, hi) = if include {
                    (
                        -(self.pads_begin[a] as i64),
                        (in_sp[a] + self.pads_end[a]) as i64,
                    )
                } else {
                    (0, in_sp[a] as i64)
                };
                (0..out_sp[a])
                    .map(|o| {
                        (0..self.kernel[a])
                            .filter(|&k| {
                                let p = (o * self.strides[a] + k * self.dilations[a]) as i64
                                    - self.pads_begin[a] as i64;
                                p >= lo && p < hi
                            })
                            .count()
                    })
                    .collect()
            })
            .collect();
        let total: usize = out_sp.iter().product();
        (0..total)
            .map(|flat| {
                let mut rest = flat;
                let mut count = 1usize;
                for a in (0..out_sp.len()).rev() {
                    count *= per_axis[a][rest % out_sp[a]];
                    rest /= out_sp[a];
                }
                count as f64
            })
            .collect()
    }

    /// Reference semantics (f64).
    pub fn eval(&self, x: &ArrayD<f64>) -> Result<ArrayD<f64>, String> {
        let t = TensorType::new(DType::F32, x.shape());
        let out_shape = self.infer(&t).map_err(|e| e.to_string())?.shape;
        let n_sp = x.ndim() - 2;
        let xs = Spatial::new(x);
        let ysp = Spatial::shape_of(&out_shape);
        let to3 = |v: &[usize], fill: usize| -> [usize; 3] {
            let mut o = [fill; 3];
            o[3 - n_sp..].copy_from_slice(v);
            o
        };
        let (k, s, d, pb) = (
            to3(&self.kernel, 1),
            to3(&self.strides, 1),
            to3(&self.dilations, 1),
            to3(&self.pads_begin, 0),
        );
        let xv: Vec<f64> = x.iter().copied().collect();
        let divisors = self.avg_divisors(&x.shape()[2..], &out_shape[2..]);
        let plane_in = xs.plane();
        let plane_out: usize = ysp.iter().product();
        let mut y = Vec::with_capacity(xs.n * xs.c * plane_out);
        let pos = |a: usize, o: usize, t: usize| (o * s[a] + t * d[a]) as i64 - pb[a] as i64;
        for nc in 0..xs.n * xs.c {
            let base = nc * plane_in;
            for od in 0..ysp[0] {
                for oh in 0..ysp[1] {
                    for ow in 0..ysp[2] {
                        let mut vals = Vec::with_capacity(k.iter().product());
                        for kd in 0..k[0] {
                            let id = pos(0, od, kd);
                            if id < 0 || id >= xs.sp[0] as i64 {
                                continue;
                            }
                            for kh in 0..k[1] {
                                let ih = pos(1, oh, kh);
                                if ih < 0 || ih >= xs.sp[1] as i64 {
                                    continue;
                                }
                                for kw in 0..k[2] {
                                    let iw = pos(2, ow, kw);
                                    if iw < 0 || iw >= xs.sp[2] as i64 {
                                        continue;
                                    }
                                    let at = (id as usize * xs.sp[1] + ih as usize) * xs.sp[2]
                                        + iw as usize;
                                    vals.push(xv[base + at]);
                                }
                            }
                        }
                        let flat = (od * ysp[1] + oh) * ysp[2] + ow;
                        y.push(match self.kind {
                            PoolKind::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                            PoolKind::Avg { .. } => vals.iter().sum::<f64>() / divisors[flat],
                            PoolKind::Lp { p } => vals
                                .iter()
                                .map(|v| v.abs().powf(p))
                                .sum::<f64>()
                                .powf(1.0 / p),
                        });
                    }
                }
            }
        }
        ArrayD::from_shape_vec(IxDyn(&out_shape), y).map_err(|e| e.to_string())
    }

    /// The attributes as the graph printer shows them.
    pub fn attributes(&self) -> String {
        let kind = match self.kind {
            PoolKind::Max => String::new(),
            PoolKind::Avg { count_include_pad } => {
                format!("count_include_pad={count_include_pad}, ")
            }
            PoolKind::Lp { p } => format!("p={p}, "),
        };
        format!(
            "{kind}kernel={:?}, strides={:?}, dilations={:?}, pads_begin={:?}, pads_end={:?}, ceil_mode={}",
            self.kernel,
            self.strides,
            self.dilations,
            self.pads_begin,
            self.pads_end,
            self.ceil_mode
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    fn arr(shape: &[usize], v: Vec<f64>) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }

    fn conv(pads: i64, stride: usize) -> ConvSpec {
        ConvSpec {
            transpose: false,
            strides: vec![stride; 2],
            dilations: vec![1; 2],
            pads_begin: vec![pads; 2],
            pads_end: vec![pads; 2],
            group: 1,
        }
    }

    #[test]
    fn conv_matches_the_onnx_basic_example() {
        // Operators.md, Conv example `conv`: x = 0..25 as [1, 1, 5, 5], W = ones [1, 1, 3, 3].
        let x = Array::range(0.0, 25.0, 1.0)
            .into_shape_with_order(IxDyn(&[1, 1, 5, 5]))
            .unwrap();
        let w = arr(&[1, 1, 3, 3], vec![1.0; 9]);
        let y = conv(0, 1).eval(&[&x, &w]).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![54.0, 63.0, 72.0, 99.0, 108.0, 117.0, 144.0, 153.0, 162.0]
        );
        // With pads 1 the corner sums the 2x2 block 0 + 1 + 5 + 6 = 12.
        let y = conv(1, 1).eval(&[&x, &w]).unwrap();
        assert_eq!(y.shape(), &[1, 1, 5, 5]);
        assert_eq!(y[[0, 0, 0, 0]], 12.0);
        // Stride 2 with pads 1: [1, 1, 3, 3], centre = 3x3 block around 12 = 108.
        let y = conv(1, 2).eval(&[&x, &w]).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(y[[0, 0, 1, 1]], 108.0);
    }

    #[test]
    fn grouped_conv_with_bias_keeps_groups_apart() {
        // Depthwise (group 2): channel 0 scaled by 2, channel 1 by -1, bias [10, 20].
        let x = arr(&[1, 2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let w = arr(&[2, 1, 1, 1], vec![2.0, -1.0]);
        let b = arr(&[2], vec![10.0, 20.0]);
        let spec = ConvSpec {
            group: 2,
            ..conv(0, 1)
        };
        let y = spec.eval(&[&x, &w, &b]).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![12.0, 14.0, 17.0, 16.0]
        );
    }

    #[test]
    fn conv_transpose_scatters_with_stride() {
        // 1-D: x = [1, 2], w = [1, 10] (k = 2), stride 2: outputs 1, 10, 2, 20.
        let x = arr(&[1, 1, 2], vec![1.0, 2.0]);
        let w = arr(&[1, 1, 2], vec![1.0, 10.0]);
        let spec = ConvSpec {
            transpose: true,
            strides: vec![2],
            dilations: vec![1],
            pads_begin: vec![0],
            pads_end: vec![0],
            group: 1,
        };
        let y = spec.eval(&[&x, &w]).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![1.0, 10.0, 2.0, 20.0]
        );
        // A negative end pad (output_shape past the full output) appends zeros.
        let spec = ConvSpec {
            pads_end: vec![-1],
            ..spec
        };
        let y = spec.eval(&[&x, &w]).unwrap();
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            vec![1.0, 10.0, 2.0, 20.0, 0.0]
        );
    }

    #[test]
    fn pool_shapes_follow_the_ceil_rule() {
        // MaxPool-22 examples: 2 with k 1, s 2, ceil gives 1 (the second window starts past
        // the input); 4 with k 3, s 2, ceil gives 2.
        assert_eq!(pool_out_len(2, 1, 2, 1, 0, 0, true), Some(1));
        assert_eq!(pool_out_len(4, 3, 2, 1, 0, 0, true), Some(2));
        assert_eq!(pool_out_len(2, 3, 3, 1, 1, 1, true), Some(1));
        assert_eq!(pool_out_len(32, 5, 3, 2, 0, 0, true), Some(9));
        assert_eq!(pool_out_len(32, 5, 3, 2, 0, 0, false), Some(8));
    }

    #[test]
    fn pools_ignore_or_count_padding() {
        let spec = |kind| PoolSpec {
            kind,
            kernel: vec![2],
            strides: vec![1],
            dilations: vec![1],
            pads_begin: vec![1],
            pads_end: vec![0],
            ceil_mode: false,
        };
        let x = arr(&[1, 1, 2], vec![-3.0, 5.0]);
        let max = spec(PoolKind::Max).eval(&x).unwrap();
        assert_eq!(max.iter().copied().collect::<Vec<_>>(), vec![-3.0, 5.0]);
        let avg = spec(PoolKind::Avg {
            count_include_pad: false,
        })
        .eval(&x)
        .unwrap();
        assert_eq!(avg.iter().copied().collect::<Vec<_>>(), vec![-3.0, 1.0]);
        let avg = spec(PoolKind::Avg {
            count_include_pad: true,
        })
        .eval(&x)
        .unwrap();
        assert_eq!(avg.iter().copied().collect::<Vec<_>>(), vec![-1.5, 1.0]);
        // L2 of (3, 4) is 5.
        let lp = spec(PoolKind::Lp { p: 2.0 })
            .eval(&arr(&[1, 1, 2], vec![3.0, -4.0]))
            .unwrap();
        assert_eq!(lp.iter().copied().collect::<Vec<_>>(), vec![3.0, 5.0]);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let t = |shape: &[usize]| TensorType::new(DType::F32, shape);
        // 3 input channels do not split into 2 groups of the weights' 2 channels.
        let spec = ConvSpec {
            group: 2,
            ..conv(0, 1)
        };
        assert!(spec.infer(&[&t(&[1, 3, 5, 5]), &t(&[4, 2, 3, 3])]).is_err());
        // A 3x3 kernel does not fit a 2x2 input without padding.
        assert!(
            conv(0, 1)
                .infer(&[&t(&[1, 1, 2, 2]), &t(&[1, 1, 3, 3])])
                .is_err()
        );
        // The bias must have one entry per output channel.
        assert!(
            conv(0, 1)
                .infer(&[&t(&[1, 1, 5, 5]), &t(&[2, 1, 3, 3]), &t(&[3])])
                .is_err()
        );
        // A pad as wide as the window would make windows of padding only.
        let pool = PoolSpec {
            kind: PoolKind::Max,
            kernel: vec![2],
            strides: vec![1],
            dilations: vec![1],
            pads_begin: vec![2],
            pads_end: vec![0],
            ceil_mode: false,
        };
        assert!(pool.infer(&t(&[1, 1, 4])).is_err());
    }
}
