//! Import of Resize (opsets 10, 11, 13, 18, 19) and Upsample (7, 9) as matmuls on the tensor
//! engine.
//!
//! Every Resize mode is separable (onnx/docs/Operators.md, Resize: "N-linear", "N-cubic"; the
//! reference implementation resizes one axis at a time), so resizing axis `a` from length `L`
//! to `L'` is a product with an `[L', L]` interpolation matrix whose row `i` holds the weights
//! output position `i` gives to the input positions. The matrices depend only on the shapes and
//! attributes, so they are computed here in f64 and stored as weights of the input's dtype; the
//! scales, sizes and roi must therefore be known at compile time (`NeedsConstant` otherwise).
//! Nearest is the same with a 0/1 matrix: each output is `1 * x` plus zeros, exact in fp32 as
//! long as the input is finite (an inf or NaN anywhere in a row's span would poison the zeros).
//! `tf_crop_and_resize` positions that fall outside the input get `extrapolation_value`: a zero
//! matrix row plus a constant added after the product.
//!
//! An axis with unit stride (the last) is `X[pre, L] . W^T`, one matmul; any other axis is
//! `W . X[b]` for each `b` of the leading axes (a batched matmul with `W` broadcast); Reshapes
//! around them only reinterpret the data.

use super::ImportError;
use super::fold;
use super::import::{Importer, NodeCx};
use super::ops::const_ints;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{BinaryOp, GraphOp, ValueId};
use tessera_ir::host::HostTensor;

/// How a fractional source coordinate picks one input position (Resize `nearest_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    /// Round half down (the default).
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    /// Always the position below.
    Floor,
    /// Always the position above.
    Ceil,
}

/// The interpolation filter (Resize `mode`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Filter {
    /// One input position per output position.
    Nearest(NearestMode),
    /// Two taps, `1 - t` and `t`.
    Linear,
    /// Keys' cubic convolution with coefficient `a` (`cubic_coeff_a`).
    Cubic {
        /// The coefficient, -0.75 by default.
        a: f64,
    },
}

/// Resize `coordinate_transformation_mode`: how output position `x` maps to an input
/// coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coord {
    /// `(x + 0.5) / scale - 0.5` (the default from opset 11).
    HalfPixel,
    /// `half_pixel` shifted so the output is centred on the input (Resize-19).
    HalfPixelSymmetric,
    /// `half_pixel`, but 0 when the output length is at most 1.
    PytorchHalfPixel,
    /// `x * (L - 1) / (L' - 1)`.
    AlignCorners,
    /// `x / scale` (Upsample and Resize-10).
    Asymmetric,
    /// `(x + 0.5) / scale` (Resize-11 only).
    TfHalfPixelForNn,
    /// Sample the region of interest `roi`; positions outside the input get the extrapolation
    /// value.
    TfCropAndResize,
}

/// Everything but the shapes that decides the interpolation matrices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interp {
    /// The filter.
    pub filter: Filter,
    /// The coordinate mapping.
    pub coord: Coord,
    /// Widen linear and cubic filters by `1 / scale` when downsampling (Resize-18).
    pub antialias: bool,
    /// Give taps outside the input weight 0 and renormalise the rest.
    pub exclude_outside: bool,
    /// The value of `tf_crop_and_resize` positions outside the input.
    pub extrapolation: f64,
}

/// One axis to resize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AxisResize {
    /// Input length.
    pub in_len: usize,
    /// Output length.
    pub out_len: usize,
    /// The scale of the coordinate mapping (`out_len / in_len` when sizes are given).
    pub scale: f64,
    /// `(start, end)` of the region of interest, normalised (used by `tf_crop_and_resize`).
    pub roi: (f64, f64),
}

/// The interpolation matrix of one axis: `out[i] = sum_j w[i * in_len + j] * in[j] + bias[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisWeights {
    /// Row-major `[out_len, in_len]`.
    pub w: Vec<f64>,
    /// Per output position, when some `tf_crop_and_resize` position is extrapolated with a
    /// nonzero value.
    pub bias: Option<Vec<f64>>,
}

/// Keys' cubic convolution kernel at distance `d` with coefficient `a` (Resize `cubic_coeff_a`,
/// equation (4) of Keys 1981): `(a+2)|d|^3 - (a+3)|d|^2 + 1` within 1, `a|d|^3 - 5a|d|^2 +
/// 8a|d| - 4a` within 2, else 0.
fn cubic_kernel(a: f64, d: f64) -> f64 {
    let x = d.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// The input coordinate output position `x` maps to, and whether it lies outside the input
/// (only `tf_crop_and_resize` extrapolates). `length_resized` is `scale * L`, which is
/// fractional when the output length came from a scale; the ONNX reference (and the test data)
/// use it, not the rounded length, in the formulas.
fn source_coord(coord: Coord, ax: &AxisResize, x: f64) -> (f64, bool) {
    let l = ax.in_len as f64;
    let scale = ax.scale;
    let resized = scale * l;
    let half_pixel = (x + 0.5) / scale - 0.5;
    let c = match coord {
        Coord::HalfPixel => half_pixel,
        Coord::HalfPixelSymmetric => {
            let adjustment = ax.out_len as f64 / resized;
            let offset = l / 2.0 * (1.0 - adjustment);
            offset + half_pixel
        }
        Coord::PytorchHalfPixel if resized > 1.0 => half_pixel,
        Coord::PytorchHalfPixel => 0.0,
        Coord::AlignCorners if resized > 1.0 => x * (l - 1.0) / (resized - 1.0),
        Coord::AlignCorners => 0.0,
        Coord::Asymmetric => x / scale,
        Coord::TfHalfPixelForNn => (x + 0.5) / scale,
        Coord::TfCropAndResize => {
            let (start, end) = ax.roi;
            let c = if resized > 1.0 {
                start * (l - 1.0) + x * (end - start) * (l - 1.0) / (resized - 1.0)
            } else {
                0.5 * (start + end) * (l - 1.0)
            };
            return (c, c < 0.0 || c > l - 1.0);
        }
    };
    (c, false)
}

/// The interpolation matrix of one axis.
///
/// Each output position reads an even number `n` of consecutive taps around its source
/// coordinate `c` (2 for nearest and linear, 4 for cubic, more when antialiasing widens the
/// filter); with `f = floor(c)` and `t = c - f` (taken as 1 when `c` is an integer, so the
/// taps lean left), the taps start at `f - n/2 + 1` (`f - n/2` when `t` is 1) and tap `k` sits
/// at distance `d_k = k + 1 - n/2 - t` from `c`. Taps outside the input read the nearest edge
/// (the reference pads by repeating the edge), so their weights add to that edge's column.
pub fn axis_weights(interp: &Interp, ax: &AxisResize) -> AxisWeights {
    let (in_len, out_len) = (ax.in_len, ax.out_len);
    // Antialiasing stretches the filter by 1/scale when downsampling; `s` scales distances.
    let s = if interp.antialias {
        ax.scale.min(1.0)
    } else {
        1.0
    };
    let n: i64 = match interp.filter {
        Filter::Nearest(_) => 2,
        Filter::Linear if interp.antialias => -2 * (-1.0 / s).floor() as i64,
        Filter::Linear => 2,
        Filter::Cubic { .. } if interp.antialias => -2 * (-2.0 / s).floor() as i64,
        Filter::Cubic { .. } => 4,
    };
    let mut w = vec![0.0; out_len * in_len];
    let mut bias = vec![0.0; out_len];
    let mut extrapolated = false;
    let mut coeffs = vec![0.0; n as usize];
    for i in 0..out_len {
        let (c, outside) = source_coord(interp.coord, ax, i as f64);
        if outside {
            bias[i] = interp.extrapolation;
            extrapolated |= interp.extrapolation != 0.0;
            continue;
        }
        let f = c.floor();
        let t = if c == f { 1.0 } else { c - f };
        let start = f as i64 - n / 2 + i64::from(c != f);
        for (k, coeff) in coeffs.iter_mut().enumerate() {
            let d = (k as i64 + 1 - n / 2) as f64 - t;
            *coeff = match interp.filter {
                Filter::Nearest(mode) => {
                    // Tap 0 is floor(c), tap 1 is floor(c) + 1 (or c itself when integral).
                    let second = t == 1.0
                        || match mode {
                            NearestMode::RoundPreferFloor => t > 0.5,
                            NearestMode::RoundPreferCeil => t >= 0.5,
                            NearestMode::Floor => false,
                            NearestMode::Ceil => true,
                        };
                    f64::from(u8::from(second == (k == 1)))
                }
                Filter::Linear => (1.0 - (d * s).abs()).clamp(0.0, 1.0),
                Filter::Cubic { a } => cubic_kernel(a, d * s),
            };
        }
        if interp.antialias && !matches!(interp.filter, Filter::Nearest(_)) {
            let sum: f64 = coeffs.iter().sum();
            coeffs.iter_mut().for_each(|v| *v /= sum);
        }
        if interp.exclude_outside {
            for (k, coeff) in coeffs.iter_mut().enumerate() {
                let idx = start + k as i64;
                if idx < 0 || idx >= in_len as i64 {
                    *coeff = 0.0;
                }
            }
            let sum: f64 = coeffs.iter().sum();
            if sum != 0.0 {
                coeffs.iter_mut().for_each(|v| *v /= sum);
            }
        }
        let row = &mut w[i * in_len..(i + 1) * in_len];
        for (k, &coeff) in coeffs.iter().enumerate() {
            let idx = (start + k as i64).clamp(0, in_len as i64 - 1) as usize;
            row[idx] += coeff;
        }
    }
    AxisWeights {
        w,
        bias: extrapolated.then_some(bias),
    }
}

/// Names a helper node of `cx`.
fn sub(cx: &NodeCx, step: &str) -> String {
    format!("{}/{step}", cx.name)
}

/// `y = W . x + bias` along `axis` of `x` (non-empty) for the constant `[out_len, in_len]`
/// matrix of `weights`; the result's last node is named `name`. Shared with CumSum, whose
/// running sums are a triangular matrix.
pub(super) fn matmul_along_axis(
    imp: &mut Importer,
    cx: &NodeCx,
    name: &str,
    x: ValueId,
    axis: usize,
    weights: &AxisWeights,
) -> Result<ValueId, ImportError> {
    let ty = imp.ty(x).clone();
    let in_len = ty.shape[axis];
    let (m, bias) = (&weights.w, weights.bias.as_deref());
    let out_len = m.len() / in_len.max(1);
    let pre: usize = ty.shape[..axis].iter().product();
    let post: usize = ty.shape[axis + 1..].iter().product();
    let mut out_shape = ty.shape.clone();
    out_shape[axis] = out_len;
    let tag = format!("axis{axis}");
    let reshape = |imp: &mut Importer, name: &str, v: ValueId, shape: Vec<usize>| {
        if imp.ty(v).shape == shape {
            return Ok(v);
        }
        imp.emit(cx, name, GraphOp::Reshape { shape }, &[v])
    };
    let (y, bias_shape) = if post == 1 {
        // Unit-stride axis: X[pre, L] . M^T[L, L'].
        let mut mt = vec![0.0; in_len * out_len];
        for (i, row) in m.chunks(in_len).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                mt[j * out_len + i] = v;
            }
        }
        let mt = HostTensor::from_f64(ty.dtype, &[in_len, out_len], &mt);
        let mt = imp.constant(&sub(cx, &format!("{tag}/weights_t")), mt);
        let x2 = reshape(imp, &sub(cx, &format!("{tag}/rows")), x, vec![pre, in_len])?;
        let y = imp.emit(
            cx,
            &sub(cx, &format!("{tag}/matmul")),
            GraphOp::MatMul,
            &[x2, mt],
        )?;
        (y, vec![out_len])
    } else {
        // Strided axis: M[L', L] . X[b][L, post] for every leading index b.
        let m = HostTensor::from_f64(ty.dtype, &[out_len, in_len], m);
        let m = imp.constant(&sub(cx, &format!("{tag}/weights")), m);
        let shape3 = if pre == 1 {
            vec![in_len, post]
        } else {
            vec![pre, in_len, post]
        };
        let x3 = reshape(imp, &sub(cx, &format!("{tag}/batched")), x, shape3)?;
        let y = imp.emit(
            cx,
            &sub(cx, &format!("{tag}/matmul")),
            GraphOp::MatMul,
            &[m, x3],
        )?;
        (y, vec![out_len, 1])
    };
    let y = match bias {
        Some(b) => {
            let b = HostTensor::from_f64(ty.dtype, &bias_shape, b);
            let b = imp.constant(&sub(cx, &format!("{tag}/extrapolation")), b);
            imp.emit(
                cx,
                &sub(cx, &format!("{tag}/extrapolate")),
                GraphOp::Binary(BinaryOp::Add),
                &[y, b],
            )?
        }
        None => y,
    };
    if imp.ty(y).shape == out_shape {
        // Already in shape: pass it through under the node's name.
        return imp.emit(cx, name, GraphOp::Identity, &[y]);
    }
    imp.emit(cx, name, GraphOp::Reshape { shape: out_shape }, &[y])
}

/// The float values of an input needed at compile time (scales, roi).
fn const_floats(
    imp: &Importer,
    cx: &NodeCx,
    v: ValueId,
    what: &str,
) -> Result<Vec<f64>, ImportError> {
    let t = imp
        .constant_of(v)
        .ok_or_else(|| ImportError::NeedsConstant {
            node: cx.name.to_string(),
            op_type: cx.op_type().to_string(),
            what: what.to_string(),
            value: imp.graph.value(v).name.clone(),
        })?;
    if !t.dtype.is_float() {
        return Err(cx.shape_err(format!("{what} must be a float tensor, it is {}", t.dtype)));
    }
    Ok(t.to_f64_vec())
}

/// An optional input that is present and not an empty tensor (Resize-11 passes an empty
/// `scales` when `sizes` is used; emptiness is in the static type, no constant needed).
fn present(imp: &Importer, cx: &NodeCx, i: usize) -> Option<ValueId> {
    cx.opt_input(i).filter(|&v| imp.ty(v).elems() > 0)
}

fn string_attr(cx: &NodeCx, key: &str, default: &str) -> Result<String, ImportError> {
    Ok(cx.attrs.string(key)?.map_or_else(
        || default.to_string(),
        |s| String::from_utf8_lossy(s).into(),
    ))
}

fn unsupported(cx: &NodeCx, detail: impl std::fmt::Display) -> ImportError {
    ImportError::Opset {
        detail: format!("node \"{}\" ({}): {detail}", cx.name, cx.op_type()),
    }
}

/// The input must be a float type the tensor engine reads (f32 or bf16).
fn check_dtype(imp: &Importer, cx: &NodeCx, x: ValueId) -> Result<DType, ImportError> {
    let dtype = imp.ty(x).dtype;
    if matches!(dtype, DType::F32 | DType::Bf16) {
        return Ok(dtype);
    }
    Err(ImportError::Type {
        what: format!("node \"{}\" ({})", cx.name, cx.op_type()),
        elem_type: dtype.to_string(),
        detail: " (resizing is a tensor-engine matmul, which reads f32 or bf16)".into(),
    })
}

/// Resizes every axis `a` with `plan[a]` (None: unchanged), in the order `order`.
fn emit_resize(
    imp: &mut Importer,
    cx: &NodeCx,
    x: ValueId,
    interp: &Interp,
    plan: &[Option<AxisResize>],
    order: &[usize],
) -> Result<ValueId, ImportError> {
    let ty = imp.ty(x).clone();
    let out_shape: Vec<usize> = ty
        .shape
        .iter()
        .zip(plan)
        .map(|(&d, p)| p.map_or(d, |p| p.out_len))
        .collect();
    if out_shape.contains(&0) {
        // Nothing to compute: an empty constant of the result type.
        return Ok(imp.constant(cx.name, HostTensor::zeros(ty.dtype, &out_shape)));
    }
    let todo: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&a| {
            plan[a].is_some_and(|p| {
                let roi_trivial = interp.coord != Coord::TfCropAndResize || p.roi == (0.0, 1.0);
                // An axis the mapping leaves as it is (the reference skips it the same way).
                !(p.out_len == p.in_len && (p.scale - 1.0).abs() <= 1e-9 && roi_trivial)
            })
        })
        .collect();
    if todo.is_empty() {
        return imp.emit(cx, cx.name, GraphOp::Identity, &[x]);
    }
    if ty.shape.contains(&0) {
        return Err(cx.shape_err(format!(
            "cannot resize an empty input {:?} to {out_shape:?}",
            ty.shape
        )));
    }
    let mut y = x;
    for (k, &a) in todo.iter().enumerate() {
        let Some(p) = plan[a] else { continue };
        let wts = axis_weights(interp, &p);
        let name = if k + 1 == todo.len() {
            cx.name.to_string()
        } else {
            sub(cx, &format!("axis{a}"))
        };
        y = matmul_along_axis(imp, cx, &name, y, a, &wts)?;
    }
    Ok(y)
}

/// Resize. Resize-10 takes `X, scales` with `mode` nearest or linear and the asymmetric mapping
/// (the Upsample-9 semantics, downsampling allowed); Resize-11 adds `roi` and `sizes` and the
/// attributes `coordinate_transformation_mode`, `cubic_coeff_a`, `exclude_outside`,
/// `extrapolation_value`, `nearest_mode`; Resize-13 makes `roi` and `scales` optional (and
/// drops `tf_half_pixel_for_nn`); Resize-18 adds `antialias`, `axes` and
/// `keep_aspect_ratio_policy`; Resize-19 adds `half_pixel_symmetric`.
pub fn resize(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let n_inputs = cx.proto.input.len();
    let (lo, hi) = if imp.opset < 11 { (2, 2) } else { (1, 4) };
    if !(lo..=hi).contains(&n_inputs) {
        return Err(cx.attr_err(format!(
            "expects {lo} to {hi} inputs, the node lists {n_inputs}"
        )));
    }
    let x = cx.input(0)?;
    check_dtype(imp, cx, x)?;
    let shape = imp.ty(x).shape.clone();
    let rank = shape.len();
    if imp.opset < 11 {
        let mode = string_attr(cx, "mode", "nearest")?;
        let scales = const_floats(imp, cx, cx.input(1)?, "the scales input")?;
        return legacy(imp, cx, x, &mode, &scales);
    }
    let a = &cx.attrs;
    let mode = string_attr(cx, "mode", "nearest")?;
    let nearest = match string_attr(cx, "nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => return Err(cx.attr_err(format!("nearest_mode `{other}` is not defined"))),
    };
    let filter = match mode.as_str() {
        "nearest" => Filter::Nearest(nearest),
        "linear" => Filter::Linear,
        "cubic" => Filter::Cubic {
            a: f64::from(a.float_or("cubic_coeff_a", -0.75)?),
        },
        other => return Err(cx.attr_err(format!("mode `{other}` is not defined"))),
    };
    let coord_name = string_attr(cx, "coordinate_transformation_mode", "half_pixel")?;
    let coord = match coord_name.as_str() {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" if imp.opset >= 19 => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_half_pixel_for_nn" if imp.opset < 13 => Coord::TfHalfPixelForNn,
        "tf_crop_and_resize" => Coord::TfCropAndResize,
        other => {
            return Err(cx.attr_err(format!(
                "coordinate_transformation_mode `{other}` is not defined at opset {}",
                imp.opset
            )));
        }
    };
    let new_attrs = imp.opset >= 18;
    let interp = Interp {
        filter,
        coord,
        antialias: new_attrs && a.flag_or("antialias", false)?,
        exclude_outside: a.flag_or("exclude_outside", false)?,
        extrapolation: f64::from(a.float_or("extrapolation_value", 0.0)?),
    };
    // `axes` (Resize-18): the axes roi, scales and sizes refer to, in their order.
    let axes: Vec<usize> = match a.ints("axes")?.filter(|_| new_attrs) {
        Some(given) => given
            .iter()
            .map(|&ax| {
                fold::normalize_axis(ax, rank).ok_or_else(|| {
                    cx.attr_err(format!("axis {ax} is out of range for rank {rank}"))
                })
            })
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    let mut seen = vec![false; rank];
    for &ax in &axes {
        if std::mem::replace(&mut seen[ax], true) {
            return Err(cx.attr_err(format!("axis {ax} is listed twice in `axes`")));
        }
    }
    let policy = if new_attrs {
        string_attr(cx, "keep_aspect_ratio_policy", "stretch")?
    } else {
        "stretch".to_string()
    };
    let scales = present(imp, cx, 2)
        .map(|v| const_floats(imp, cx, v, "the scales input"))
        .transpose()?;
    let sizes = present(imp, cx, 3)
        .map(|v| const_ints(imp, cx, v, "the sizes input"))
        .transpose()?;
    let n = axes.len();
    let roi: Vec<(f64, f64)> = match (coord, present(imp, cx, 1)) {
        (Coord::TfCropAndResize, Some(v)) => {
            let r = const_floats(imp, cx, v, "the roi input")?;
            if r.len() != 2 * n {
                return Err(cx.shape_err(format!(
                    "roi has {} values, expected 2 x {n} (starts then ends)",
                    r.len()
                )));
            }
            (0..n).map(|i| (r[i], r[n + i])).collect()
        }
        (Coord::TfCropAndResize, None) => {
            return Err(cx.attr_err("tf_crop_and_resize needs the roi input"));
        }
        // roi only takes effect with tf_crop_and_resize (Resize-11+, input `roi`).
        _ => vec![(0.0, 1.0); n],
    };
    let mut plan: Vec<Option<AxisResize>> = vec![None; rank];
    match (scales, sizes) {
        (Some(_), Some(_)) => {
            return Err(cx.attr_err("only one of scales and sizes may be given"));
        }
        (None, None) => return Err(cx.attr_err("one of scales and sizes must be given")),
        (Some(scales), None) => {
            if scales.len() != n {
                return Err(
                    cx.shape_err(format!("scales has {} values for {n} axes", scales.len()))
                );
            }
            if coord == Coord::TfCropAndResize {
                // The spec sizes the output as floor(L * (end - start) * scale), the reference
                // implementation as floor(L * scale); refuse rather than pick one.
                return Err(unsupported(
                    cx,
                    "tf_crop_and_resize with scales (the spec and the reference implementation \
                     size the output differently); give sizes instead",
                ));
            }
            for (i, &ax) in axes.iter().enumerate() {
                let scale = scales[i];
                if !(scale > 0.0 && scale.is_finite()) {
                    return Err(cx.attr_err(format!("scale {scale} must be positive")));
                }
                let out_len = (shape[ax] as f64 * scale).floor() as usize;
                plan[ax] = Some(AxisResize {
                    in_len: shape[ax],
                    out_len,
                    scale,
                    roi: roi[i],
                });
            }
        }
        (None, Some(sizes)) => {
            if sizes.len() != n {
                return Err(cx.shape_err(format!("sizes has {} values for {n} axes", sizes.len())));
            }
            let sizes: Vec<usize> = sizes
                .iter()
                .map(|&s| usize::try_from(s))
                .collect::<Result<_, _>>()
                .map_err(|_| cx.attr_err(format!("sizes {sizes:?} has a negative entry")))?;
            if let Some(&ax) = axes.iter().find(|&&ax| shape[ax] == 0) {
                return Err(cx.shape_err(format!("axis {ax} of the input is empty")));
            }
            let ratio = |i: usize| sizes[i] as f64 / shape[axes[i]] as f64;
            // keep_aspect_ratio_policy (Resize-18): one scale for every listed axis, the
            // smallest (not_larger) or largest (not_smaller), sizes rounded half up.
            let common = match policy.as_str() {
                "stretch" => None,
                "not_larger" => Some((0..n).map(ratio).fold(f64::INFINITY, f64::min)),
                "not_smaller" => Some((0..n).map(ratio).fold(f64::NEG_INFINITY, f64::max)),
                other => {
                    return Err(
                        cx.attr_err(format!("keep_aspect_ratio_policy `{other}` is not defined"))
                    );
                }
            };
            for (i, &ax) in axes.iter().enumerate() {
                let (scale, out_len) = match common {
                    None => (ratio(i), sizes[i]),
                    Some(s) => (s, (s * shape[ax] as f64 + 0.5).floor() as usize),
                };
                plan[ax] = Some(AxisResize {
                    in_len: shape[ax],
                    out_len,
                    scale,
                    roi: roi[i],
                });
            }
        }
    }
    emit_resize(imp, cx, x, &interp, &plan, &axes)
}

/// Upsample-7 (scales attribute) and Upsample-9 (scales input); deprecated from opset 10 in
/// favour of Resize. Scales are at least 1.
pub fn upsample(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    if imp.opset >= 10 {
        return Err(unsupported(
            cx,
            format!(
                "Upsample is deprecated from opset 10 (the model imports {}); use Resize",
                imp.opset
            ),
        ));
    }
    let n_inputs = cx.proto.input.len();
    let want = if imp.opset >= 9 { 2 } else { 1 };
    if n_inputs != want {
        return Err(cx.attr_err(format!(
            "expects {want} input(s), the node lists {n_inputs}"
        )));
    }
    let x = cx.input(0)?;
    check_dtype(imp, cx, x)?;
    let scales = if imp.opset >= 9 {
        const_floats(imp, cx, cx.input(1)?, "the scales input")?
    } else {
        cx.attrs
            .floats("scales")?
            .ok_or_else(|| cx.attr_err("required attribute `scales` is missing"))?
            .iter()
            .map(|&s| f64::from(s))
            .collect()
    };
    if let Some(s) = scales.iter().find(|&&s| !(s >= 1.0 && s.is_finite())) {
        return Err(cx.attr_err(format!("Upsample scales must be at least 1, got {s}")));
    }
    let mode = string_attr(cx, "mode", "nearest")?;
    legacy(imp, cx, x, &mode, &scales)
}

/// Upsample-7/9 and Resize-10: `output = floor(L * scale)`, the asymmetric mapping `x / scale`;
/// nearest takes the input position at or below (so upsampling by an integer repeats each
/// element). Which position downsampling nearest picks is not defined at these opsets, so it is
/// refused.
fn legacy(
    imp: &mut Importer,
    cx: &NodeCx,
    x: ValueId,
    mode: &str,
    scales: &[f64],
) -> Result<ValueId, ImportError> {
    let shape = imp.ty(x).shape.clone();
    if scales.len() != shape.len() {
        return Err(cx.shape_err(format!(
            "scales has {} values for an input of rank {}",
            scales.len(),
            shape.len()
        )));
    }
    let filter = match mode {
        "nearest" => Filter::Nearest(NearestMode::Floor),
        // Upsample-1 called it "bilinear".
        "linear" | "bilinear" => Filter::Linear,
        other => return Err(cx.attr_err(format!("mode `{other}` is not defined"))),
    };
    let mut plan = vec![None; shape.len()];
    for (ax, (&len, &scale)) in shape.iter().zip(scales).enumerate() {
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(cx.attr_err(format!("scale {scale} must be positive")));
        }
        if scale < 1.0 && matches!(filter, Filter::Nearest(_)) {
            return Err(unsupported(
                cx,
                "nearest downsampling before Resize-11 (which input position it picks is not \
                 specified)",
            ));
        }
        plan[ax] = Some(AxisResize {
            in_len: len,
            out_len: (len as f64 * scale).floor() as usize,
            scale,
            roi: (0.0, 1.0),
        });
    }
    let interp = Interp {
        filter,
        coord: Coord::Asymmetric,
        antialias: false,
        exclude_outside: false,
        extrapolation: 0.0,
    };
    let order: Vec<usize> = (0..shape.len()).collect();
    emit_resize(imp, cx, x, &interp, &plan, &order)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::import::import_model;
    use super::super::proto::tensor_shape_proto::{Dimension, dimension::Value as Dim};
    use super::super::proto::*;
    use super::*;
    use prost::Message;
    use std::collections::BTreeMap;

    /// A string attribute.
    pub(in crate::onnx) fn attr_s(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::String as i32,
            s: v.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    /// An int attribute.
    pub(in crate::onnx) fn attr_i(name: &str, i: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i,
            ..Default::default()
        }
    }

    /// An ints attribute.
    pub(in crate::onnx) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    /// A float attribute.
    pub(in crate::onnx) fn attr_f(name: &str, f: f32) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Float as i32,
            f,
            ..Default::default()
        }
    }

    /// A float32 initializer.
    pub(in crate::onnx) fn init_f32(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            float_data: v.to_vec(),
            ..Default::default()
        }
    }

    /// An int64 initializer.
    pub(in crate::onnx) fn init_i64(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type::INT64,
            int64_data: v.to_vec(),
            ..Default::default()
        }
    }

    fn value_info(name: &str, elem_type: i32, shape: Option<&[usize]>) -> ValueInfoProto {
        let shape = shape.map(|s| TensorShapeProto {
            dim: s
                .iter()
                .map(|&d| Dimension {
                    value: Some(Dim::DimValue(d as i64)),
                    denotation: String::new(),
                })
                .collect(),
        });
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type,
                    shape,
                })),
                denotation: String::new(),
            }),
            doc_string: String::new(),
        }
    }

    /// One `op` node `y = op(node_inputs)` at `opset`, whose graph inputs are the `inputs`
    /// (element type `elem_type`, the values given) and whose other operands are
    /// `initializers`; imported, then run on the reference evaluator.
    pub(in crate::onnx) fn run_node(
        op: &str,
        opset: i64,
        attribute: Vec<AttributeProto>,
        node_inputs: &[&str],
        inputs: &[(&str, DType, &[usize], &[f64])],
        initializers: Vec<TensorProto>,
    ) -> Result<HostTensor, ImportError> {
        let elem = |d: DType| match d {
            DType::F32 => data_type::FLOAT,
            DType::I32 => data_type::INT32,
            _ => data_type::INT64,
        };
        let out_type = inputs.first().map_or(data_type::FLOAT, |i| elem(i.1));
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(GraphProto {
                name: "g".into(),
                node: vec![NodeProto {
                    input: node_inputs.iter().map(|s| s.to_string()).collect(),
                    output: vec!["y".into()],
                    name: "n".into(),
                    op_type: op.into(),
                    attribute,
                    ..Default::default()
                }],
                input: inputs
                    .iter()
                    .map(|(n, d, s, _)| value_info(n, elem(*d), Some(s)))
                    .collect(),
                output: vec![value_info("y", out_type, None)],
                initializer: initializers,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let g = import_model(&model, None)?;
        let feeds: BTreeMap<String, HostTensor> = inputs
            .iter()
            .map(|(n, d, s, v)| (n.to_string(), HostTensor::from_f64(*d, s, v)))
            .collect();
        let mut out = tessera_ir::graph::evaluate(&g, &feeds).expect("the graph evaluates");
        Ok(out.remove("y").expect("output y"))
    }

    /// `run_node` with one f32 graph input `x`.
    fn resize_x(
        op: &str,
        opset: i64,
        attrs: Vec<AttributeProto>,
        node_inputs: &[&str],
        shape: &[usize],
        x: &[f64],
        inits: Vec<TensorProto>,
    ) -> Result<HostTensor, ImportError> {
        run_node(
            op,
            opset,
            attrs,
            node_inputs,
            &[("x", DType::F32, shape, x)],
            inits,
        )
    }

    #[test]
    fn bilinear_upsample_of_a_2x2_image() {
        // Rows of the axis matrix are [1, 0], [.75, .25], [.25, .75], [0, 1] (see the
        // half-pixel weights test); applied to H then W of [[1, 2], [3, 4]]. These are the
        // values of ONNX's test_resize_upsample_scales_linear.
        let y = resize_x(
            "Resize",
            19,
            vec![attr_s("mode", "linear")],
            &["x", "", "scales"],
            &[1, 1, 2, 2],
            &[1.0, 2.0, 3.0, 4.0],
            vec![init_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0])],
        )
        .unwrap();
        assert_eq!(y.shape, vec![1, 1, 4, 4]);
        #[rustfmt::skip]
        let want = [
            1.0, 1.25, 1.75, 2.0,
            1.5, 1.75, 2.25, 2.5,
            2.5, 2.75, 3.25, 3.5,
            3.0, 3.25, 3.75, 4.0,
        ];
        assert_eq!(y.to_f64_vec(), want);
    }

    #[test]
    fn upsample_nearest_repeats_and_resize_axes_reorder() {
        // Upsample-9 nearest with integer scales repeats each element (asymmetric, floor).
        let y = resize_x(
            "Upsample",
            9,
            vec![],
            &["x", "scales"],
            &[1, 2],
            &[1.0, 2.0],
            vec![init_f32("scales", &[2], &[2.0, 3.0])],
        )
        .unwrap();
        assert_eq!(y.shape, vec![2, 6]);
        assert_eq!(
            y.to_f64_vec(),
            [1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2.]
        );
        // Resize-18 sizes with axes [1, 0] name the axes in that order.
        let y = resize_x(
            "Resize",
            18,
            vec![attr_ints("axes", &[1, 0])],
            &["x", "", "", "sizes"],
            &[1, 2],
            &[1.0, 2.0],
            vec![init_i64("sizes", &[2], &[4, 2])],
        )
        .unwrap();
        assert_eq!(y.shape, vec![2, 4]);
        assert_eq!(y.to_f64_vec(), [1., 1., 2., 2., 1., 1., 2., 2.]);
    }

    #[test]
    fn crop_and_resize_fills_outside_with_the_extrapolation_value() {
        // roi (0, 0.5)..(1, 1.5) over a 2x2 input resized to 2x2: rows sample 0 and 1, columns
        // 0.5 and 1.5; column 1.5 lies outside [0, 1], so the right column is 10.
        let y = resize_x(
            "Resize",
            19,
            vec![
                attr_s("mode", "linear"),
                attr_s("coordinate_transformation_mode", "tf_crop_and_resize"),
                attr_f("extrapolation_value", 10.0),
                attr_ints("axes", &[0, 1]),
            ],
            &["x", "roi", "", "sizes"],
            &[2, 2],
            &[1.0, 2.0, 3.0, 4.0],
            vec![
                init_f32("roi", &[4], &[0.0, 0.5, 1.0, 1.5]),
                init_i64("sizes", &[2], &[2, 2]),
            ],
        )
        .unwrap();
        assert_eq!(y.to_f64_vec(), [1.5, 10.0, 3.5, 10.0]);
    }

    #[test]
    fn runtime_scales_need_a_constant_and_integers_are_refused() {
        let e = run_node(
            "Resize",
            19,
            vec![],
            &["x", "", "scales"],
            &[
                ("x", DType::F32, &[1, 2], &[1.0, 2.0]),
                ("scales", DType::F32, &[2], &[1.0, 2.0]),
            ],
            vec![],
        )
        .unwrap_err();
        assert!(
            matches!(&e, ImportError::NeedsConstant { value, .. } if value == "scales"),
            "{e}"
        );
        let e = run_node(
            "Resize",
            19,
            vec![],
            &["x", "", "scales"],
            &[("x", DType::I32, &[1, 2], &[1.0, 2.0])],
            vec![init_f32("scales", &[2], &[1.0, 2.0])],
        )
        .unwrap_err();
        assert!(matches!(e, ImportError::Type { .. }), "{e}");
        let e = resize_x(
            "Resize",
            19,
            vec![attr_s("mode", "bicubic")],
            &["x", "", "scales"],
            &[1, 2],
            &[1.0, 2.0],
            vec![init_f32("scales", &[2], &[1.0, 2.0])],
        )
        .unwrap_err();
        assert!(e.to_string().contains("bicubic"), "{e}");
    }

    fn ax(in_len: usize, out_len: usize, scale: f64) -> AxisResize {
        AxisResize {
            in_len,
            out_len,
            scale,
            roi: (0.0, 1.0),
        }
    }

    fn interp(filter: Filter, coord: Coord) -> Interp {
        Interp {
            filter,
            coord,
            antialias: false,
            exclude_outside: false,
            extrapolation: 0.0,
        }
    }

    fn rows(w: &AxisWeights, in_len: usize) -> Vec<Vec<f64>> {
        w.w.chunks(in_len).map(<[f64]>::to_vec).collect()
    }

    fn close(a: &[Vec<f64>], b: &[Vec<f64>]) {
        assert_eq!(a.len(), b.len());
        for (ra, rb) in a.iter().zip(b) {
            for (x, y) in ra.iter().zip(rb) {
                assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn linear_half_pixel_upsample_by_two() {
        // half_pixel, L=2 -> 4: x_ori = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25. The ends
        // clamp to the edges; 0.25 weighs 0.75/0.25, 0.75 weighs 0.25/0.75.
        let w = axis_weights(&interp(Filter::Linear, Coord::HalfPixel), &ax(2, 4, 2.0));
        close(
            &rows(&w, 2),
            &[
                vec![1.0, 0.0],
                vec![0.75, 0.25],
                vec![0.25, 0.75],
                vec![0.0, 1.0],
            ],
        );
        assert!(w.bias.is_none());
    }

    #[test]
    fn nearest_modes_pick_the_documented_neighbour() {
        // asymmetric, L=4 -> 8: x_ori = i / 2. round_prefer_floor sends 0.5 to 0, 1.5 to 1;
        // round_prefer_ceil sends them to 1, 2; integers map to themselves.
        let pick = |mode| {
            let w = axis_weights(
                &interp(Filter::Nearest(mode), Coord::Asymmetric),
                &ax(4, 8, 2.0),
            );
            rows(&w, 4)
                .iter()
                .map(|r| r.iter().position(|&v| v == 1.0).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pick(NearestMode::RoundPreferFloor),
            [0, 0, 1, 1, 2, 2, 3, 3]
        );
        assert_eq!(pick(NearestMode::RoundPreferCeil), [0, 1, 1, 2, 2, 3, 3, 3]);
        assert_eq!(pick(NearestMode::Floor), [0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(pick(NearestMode::Ceil), [0, 1, 1, 2, 2, 3, 3, 3]);
    }

    #[test]
    fn align_corners_uses_the_fractional_output_length() {
        // L=4, scale 0.6: length_resized = 2.4, so output 1 samples 1 * 3 / 1.4 = 2.142857...,
        // as the ONNX test data expects (row [1, 2, 3, 4] gives 3.142857).
        let w = axis_weights(&interp(Filter::Linear, Coord::AlignCorners), &ax(4, 2, 0.6));
        let t = 3.0 / 1.4 - 2.0;
        close(
            &rows(&w, 4),
            &[vec![1.0, 0.0, 0.0, 0.0], vec![0.0, 0.0, 1.0 - t, t]],
        );
    }

    #[test]
    fn cubic_rows_sum_to_one_and_match_keys_kernel() {
        // Asymmetric, L=4 -> 8, output 1 samples 0.5: taps -1, 0, 1, 2 at distances 1.5, 0.5,
        // 0.5, 1.5. With a = -0.75: k(0.5) = (1.25 * 0.5 - 2.25) * 0.25 + 1 = 0.59375 and
        // k(1.5) = ((-0.75 * 1.5 + 3.75) * 1.5 - 6) * 1.5 + 3 = -0.09375; tap -1 reads the edge
        // (column 0).
        let w = axis_weights(
            &interp(Filter::Cubic { a: -0.75 }, Coord::Asymmetric),
            &ax(4, 8, 2.0),
        );
        let r = rows(&w, 4);
        close(
            &r[1..2],
            &[vec![-0.09375 + 0.59375, 0.59375, -0.09375, 0.0]],
        );
        for row in &r {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn exclude_outside_renormalises_the_inside_taps() {
        // Same sample as above with exclude_outside: tap -1 is dropped, the rest renormalised.
        let mut it = interp(Filter::Cubic { a: -0.75 }, Coord::Asymmetric);
        it.exclude_outside = true;
        let w = axis_weights(&it, &ax(4, 8, 2.0));
        let sum = 0.59375 + 0.59375 - 0.09375;
        close(
            &rows(&w, 4)[1..2],
            &[vec![0.59375 / sum, 0.59375 / sum, -0.09375 / sum, 0.0]],
        );
    }

    #[test]
    fn antialias_linear_widens_the_filter() {
        // half_pixel, L=4 -> 2 (scale 0.5): output 0 samples 0.5; the tent is stretched to
        // half-width 2, so taps -1..2 at distances 1.5, 0.5, 0.5, 1.5 weigh 0.25, 0.75, 0.75,
        // 0.25, normalised to 1/8, 3/8, 3/8, 1/8; tap -1 reads column 0.
        let mut it = interp(Filter::Linear, Coord::HalfPixel);
        it.antialias = true;
        let w = axis_weights(&it, &ax(4, 2, 0.5));
        close(
            &rows(&w, 4),
            &[vec![0.5, 0.375, 0.125, 0.0], vec![0.0, 0.125, 0.375, 0.5]],
        );
    }

    #[test]
    fn crop_and_resize_extrapolates_outside_the_input() {
        // roi (0.5, 1.5) of L=3 -> 3: x_ori = 1 + i * 1 * 2 / 2 = 1, 2, 3; 3 is past the last
        // position (2), so that row is empty and takes the extrapolation value.
        let mut it = interp(Filter::Linear, Coord::TfCropAndResize);
        it.extrapolation = 10.0;
        let mut a = ax(3, 3, 1.0);
        a.roi = (0.5, 1.5);
        let w = axis_weights(&it, &a);
        close(
            &rows(&w, 3),
            &[
                vec![0.0, 1.0, 0.0],
                vec![0.0, 0.0, 1.0],
                vec![0.0, 0.0, 0.0],
            ],
        );
        assert_eq!(w.bias, Some(vec![0.0, 0.0, 10.0]));
    }
}
