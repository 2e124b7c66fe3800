//! Import of the shape and data-movement operators: Slice, Expand, Tile and Pad become
//! [`GraphOp::Movement`]; Split becomes one Slice per output; DepthToSpace and SpaceToDepth
//! are Reshape, Transpose, Reshape; Size and EyeLike depend only on shapes and fold to
//! constants; Trilu is `Where` with a constant mask; Dropout in inference is the identity (with
//! an all-true mask). Values that decide shapes (starts, pads, repeats, ...) must be constants;
//! otherwise the importer reports [`ImportError::NeedsConstant`]. Opset-dependent behaviour
//! follows onnx/docs/Operators.md and Changelog.md, cited per operator.

use super::ImportError;
use super::error::{UnsupportedOp, UnsupportedOps};
use super::fold;
use super::import::{Importer, NodeCx};
use super::ops::{const_ints, needs_constant};
use super::proto::data_type;
use super::tensor::dtype_of;
use tessera_ir::dtype::DType;
use tessera_ir::graph::ops::broadcast_shapes;
use tessera_ir::graph::{AxisSlice, ElementwiseOp, Graph, GraphOp, MovementOp, PadMode, ValueId};
use tessera_ir::host::HostTensor;

/// The first ai.onnx opset of each operator converted here; `None` for the others.
pub fn since_opset(op_type: &str) -> Option<i64> {
    Some(match op_type {
        "Slice" | "Tile" | "Pad" | "Split" | "DepthToSpace" | "SpaceToDepth" | "Size"
        | "Dropout" => 1,
        "Expand" => 8,
        "EyeLike" => 9,
        "Trilu" => 14,
        _ => return None,
    })
}

/// True for the operators [`convert`] handles.
pub fn handles(op_type: &str) -> bool {
    since_opset(op_type).is_some()
}

/// Converts one node of an operator [`handles`] accepts.
pub fn convert(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    match cx.op_type() {
        "Slice" => slice(imp, cx),
        "Expand" => expand(imp, cx),
        "Tile" => tile(imp, cx),
        "Pad" => pad(imp, cx),
        "Split" => split(imp, cx),
        "DepthToSpace" => depth_to_space(imp, cx),
        "SpaceToDepth" => space_to_depth(imp, cx),
        "Size" => size(imp, cx),
        "Dropout" => dropout(imp, cx),
        "EyeLike" => eye_like(imp, cx),
        "Trilu" => trilu(imp, cx),
        other => Err(cx.attr_err(format!("operator {other} is not a movement operator"))),
    }
}

/// A graph input that `v` is computed from (`v` itself when it is one), found by walking the
/// nodes back from `v`; `None` when `v` depends on no graph input.
pub fn source_input(g: &Graph, v: ValueId) -> Option<ValueId> {
    let mut stack = vec![v];
    let mut seen = std::collections::HashSet::new();
    while let Some(u) = stack.pop() {
        if !seen.insert(u) {
            continue;
        }
        if g.inputs.contains(&u) {
            return Some(u);
        }
        if let Some(n) = g.nodes.iter().find(|n| n.outputs.contains(&u)) {
            stack.extend(n.inputs.iter().rev());
        }
    }
    None
}

fn arity(cx: &NodeCx, lo: usize, hi: usize) -> Result<(), ImportError> {
    let n = cx.proto.input.len();
    if (lo..=hi).contains(&n) {
        return Ok(());
    }
    Err(cx.attr_err(format!("expects {lo} to {hi} input(s), the node lists {n}")))
}

/// Normalises `axes` (negative ones count from the back) and refuses repeats.
fn axes_of(cx: &NodeCx, axes: &[i64], rank: usize) -> Result<Vec<usize>, ImportError> {
    let mut seen = vec![false; rank];
    axes.iter()
        .map(|&a| {
            let i = fold::normalize_axis(a, rank)
                .ok_or_else(|| cx.attr_err(format!("axis {a} is out of range for rank {rank}")))?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(cx.attr_err(format!("axes {axes:?} repeat axis {a}")));
            }
            Ok(i)
        })
        .collect()
}

fn sizes(cx: &NodeCx, what: &str, v: &[i64]) -> Result<Vec<usize>, ImportError> {
    v.iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| cx.shape_err(format!("{what} {v:?} has a negative entry {d}")))
        })
        .collect()
}

/// One axis of ONNX Slice (Operators.md, Slice-13): negative `start`/`end` count from the back;
/// then both are clamped, to `[0, dim]` for a positive step and to `[0, dim - 1]` (start) and
/// `[-1, dim - 1]` (end) for a negative one; the result takes indices from `start` toward
/// `end` (exclusive), `step` apart.
pub fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> AxisSlice {
    let n = dim as i128;
    let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
    let from_back = |v: i128| if v < 0 { v + n } else { v };
    let (s, e) = if step > 0 {
        (from_back(start).clamp(0, n), from_back(end).clamp(0, n))
    } else {
        (
            from_back(start).clamp(0, (n - 1).max(0)),
            from_back(end).clamp(-1, n - 1),
        )
    };
    let len = if step > 0 {
        ((e - s).max(0) + step - 1) / step
    } else {
        ((s - e).max(0) + (-step) - 1) / (-step)
    };
    AxisSlice {
        start: if len > 0 { s as usize } else { 0 },
        step: step as i64,
        len: if dim == 0 { 0 } else { len as usize },
    }
}

/// Slice: `starts`, `ends`, `axes` are attributes in Slice-1; from Slice-10 they are inputs,
/// with an optional `steps` input (negative axes from Slice-11).
fn slice(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let x = cx.input(0)?;
    let shape = imp.ty(x).shape.clone();
    let (starts, ends, axes, steps) = if imp.opset < 10 {
        arity(cx, 1, 1)?;
        let req = |k: &str| -> Result<Vec<i64>, ImportError> {
            Ok(cx
                .attrs
                .ints(k)?
                .ok_or_else(|| cx.attr_err(format!("required attribute `{k}` is missing")))?
                .to_vec())
        };
        let axes = cx.attrs.ints("axes")?.map(<[i64]>::to_vec);
        (req("starts")?, req("ends")?, axes, None)
    } else {
        arity(cx, 3, 5)?;
        let ints = |i: usize, what: &str| {
            cx.opt_input(i)
                .map(|v| const_ints(imp, cx, v, what))
                .transpose()
        };
        let starts = ints(1, "starts")?.unwrap_or_default();
        let ends = ints(2, "ends")?.unwrap_or_default();
        (starts, ends, ints(3, "axes")?, ints(4, "steps")?)
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(cx.shape_err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} must have one \
             length"
        )));
    }
    let axes = axes_of(cx, &axes, shape.len())?;
    let mut spec: Vec<AxisSlice> = shape
        .iter()
        .map(|&n| AxisSlice {
            start: 0,
            step: 1,
            len: n,
        })
        .collect();
    for (k, &a) in axes.iter().enumerate() {
        if steps[k] == 0 {
            return Err(cx.attr_err(format!("steps {steps:?} has a 0")));
        }
        spec[a] = slice_axis(shape[a], starts[k], ends[k], steps[k]);
    }
    let op = GraphOp::Movement(MovementOp::Slice(spec));
    imp.emit(cx, cx.name, op, &[x])
}

/// Expand (Expand-8/-13): numpy broadcast of the input and the `shape` input, so `shape` may
/// have fewer axes or 1s where the input is larger.
fn expand(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 2, 2)?;
    let x = cx.input(0)?;
    let dims = const_ints(imp, cx, cx.input(1)?, "the shape input")?;
    let dims = sizes(cx, "shape", &dims)?;
    let shape =
        broadcast_shapes(&imp.ty(x).shape, &dims).map_err(|e| cx.shape_err(e.to_string()))?;
    imp.emit(
        cx,
        cx.name,
        GraphOp::Movement(MovementOp::Expand { shape }),
        &[x],
    )
}

/// Tile: `repeats` is an input from Tile-6 (one non-negative count per axis); Tile-1's
/// `tiles`/`axis` inputs are not imported.
fn tile(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    if imp.opset < 6 {
        return Err(ImportError::Opset {
            detail: format!(
                "node \"{}\" (Tile): Tile-1 (tiles and axis inputs) is not imported; opset 6 \
                 and later are",
                cx.name
            ),
        });
    }
    arity(cx, 2, 2)?;
    let x = cx.input(0)?;
    let repeats = const_ints(imp, cx, cx.input(1)?, "the repeats input")?;
    let repeats = sizes(cx, "repeats", &repeats)?;
    imp.emit(
        cx,
        cx.name,
        GraphOp::Movement(MovementOp::Tile { repeats }),
        &[x],
    )
}

/// Pad. Pad-2: `pads` and the float `value` are attributes. From Pad-11: `pads` and an optional
/// `constant_value` are inputs; Pad-18 adds an optional `axes` input (pads then list the
/// given axes only) and Pad-19 the `wrap` mode. `pads` lists all the begins, then all the
/// ends; negative pads remove elements.
fn pad(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    if imp.opset < 2 {
        return Err(ImportError::Opset {
            detail: format!(
                "node \"{}\" (Pad): Pad-1 (`paddings`) is not imported; opset 2 and later are",
                cx.name
            ),
        });
    }
    let x = cx.input(0)?;
    let dtype = imp.ty(x).dtype;
    let rank = imp.ty(x).shape.len();
    let mode = match cx.attrs.string("mode")? {
        None => PadMode::Constant,
        Some(m) => match &m.to_ascii_lowercase()[..] {
            b"constant" => PadMode::Constant,
            b"reflect" => PadMode::Reflect,
            b"edge" => PadMode::Edge,
            b"wrap" if imp.opset >= 19 => PadMode::Wrap,
            _ => {
                return Err(cx.attr_err(format!(
                    "mode `{}` is not a Pad mode at opset {}",
                    String::from_utf8_lossy(m),
                    imp.opset
                )));
            }
        },
    };
    let (raw, axes, value) = if imp.opset < 11 {
        arity(cx, 1, 1)?;
        let raw = cx
            .attrs
            .ints("pads")?
            .ok_or_else(|| cx.attr_err("required attribute `pads` is missing"))?
            .to_vec();
        let v = f64::from(cx.attrs.float_or("value", 0.0)?);
        let value = (mode == PadMode::Constant && v != 0.0).then(|| {
            let name = format!("{}/value", cx.name);
            imp.constant(&name, HostTensor::from_f64(dtype, &[], &[v]))
        });
        (raw, None, value)
    } else {
        arity(cx, 2, 4)?;
        let raw = const_ints(imp, cx, cx.input(1)?, "the pads input")?;
        let axes = match cx.opt_input(3) {
            Some(v) if imp.opset >= 18 => Some(const_ints(imp, cx, v, "the axes input")?),
            Some(_) => return Err(cx.attr_err("the axes input arrives with Pad-18")),
            None => None,
        };
        // The constant is only read in constant mode (Pad-11: "used if the mode is constant").
        let value = cx.opt_input(2).filter(|_| mode == PadMode::Constant);
        (raw, axes, value)
    };
    let axes = match axes {
        Some(a) => axes_of(cx, &a, rank)?,
        None => (0..rank).collect(),
    };
    if raw.len() != 2 * axes.len() {
        return Err(cx.shape_err(format!(
            "pads {raw:?} must have two entries for each of the {} padded axes",
            axes.len()
        )));
    }
    let mut pads = vec![(0i64, 0i64); rank];
    for (k, &a) in axes.iter().enumerate() {
        pads[a] = (raw[k], raw[k + axes.len()]);
    }
    let mut ins = vec![x];
    ins.extend(value);
    imp.emit(
        cx,
        cx.name,
        GraphOp::Movement(MovementOp::Pad { mode, pads }),
        &ins,
    )
}

/// Split along `axis` (default 0) into the node's outputs. The sizes come from the `split`
/// attribute (Split-2/-11) or input (Split-13; Split-1 accepted either), else equal parts;
/// Split-18 adds `num_outputs`, where an uneven axis leaves the last part smaller. Each part is
/// a Slice; parts after the first are reported as extra outputs.
fn split(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 2)?;
    let x = cx.input(0)?;
    let shape = imp.ty(x).shape.clone();
    let axis = cx.attrs.int_or("axis", 0)?;
    let axis = fold::normalize_axis(axis, shape.len()).ok_or_else(|| {
        cx.attr_err(format!(
            "axis {axis} is out of range for rank {}",
            shape.len()
        ))
    })?;
    let outputs = cx.proto.output.len();
    let given = match cx.opt_input(1) {
        Some(v) => Some(const_ints(imp, cx, v, "the split input")?),
        None if imp.opset < 13 => cx.attrs.ints("split")?.map(<[i64]>::to_vec),
        None => None,
    };
    let num_outputs = if imp.opset >= 18 {
        cx.attrs.int("num_outputs")?
    } else {
        None
    };
    let dim = shape[axis];
    let parts = match (given, num_outputs) {
        (Some(_), Some(_)) => {
            return Err(cx.attr_err("both a split input and num_outputs are given"));
        }
        (Some(s), None) => sizes(cx, "split", &s)?,
        (None, n) => {
            let n = match n {
                Some(n) => usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| cx.attr_err(format!("num_outputs {n} is not positive")))?,
                None => outputs,
            };
            // ONNX's reference: equal parts of ceil(dim / n), the last one what remains.
            let chunk = dim.div_ceil(n.max(1));
            let rest = dim as i128 - (chunk * (n - 1)) as i128;
            if rest < 0 {
                return Err(cx.shape_err(format!(
                    "an axis of {dim} cannot be split into {n} parts of {chunk}"
                )));
            }
            let mut parts = vec![chunk; n - 1];
            parts.push(rest as usize);
            parts
        }
    };
    if parts.len() != outputs || parts.iter().sum::<usize>() != dim {
        return Err(cx.shape_err(format!(
            "parts {parts:?} must be one per output ({outputs}) and add up to the axis size {dim}"
        )));
    }
    let mut results = Vec::with_capacity(parts.len());
    let mut at = 0usize;
    for (i, &len) in parts.iter().enumerate() {
        let mut spec: Vec<AxisSlice> = shape
            .iter()
            .map(|&n| AxisSlice {
                start: 0,
                step: 1,
                len: n,
            })
            .collect();
        spec[axis] = AxisSlice {
            start: if len > 0 { at } else { 0 },
            step: 1,
            len,
        };
        let name = if i == 0 {
            cx.name.to_string()
        } else {
            format!("{}/part{i}", cx.name)
        };
        results.push(imp.emit(cx, &name, GraphOp::Movement(MovementOp::Slice(spec)), &[x])?);
        at += len;
    }
    imp.extra_outputs = results.split_off(1);
    Ok(results[0])
}

fn block_size(cx: &NodeCx) -> Result<usize, ImportError> {
    let b = cx.attrs.int_required("blocksize")?;
    usize::try_from(b)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| cx.attr_err(format!("blocksize {b} is not positive")))
}

fn nchw(imp: &Importer, cx: &NodeCx, x: ValueId) -> Result<[usize; 4], ImportError> {
    let s = &imp.ty(x).shape;
    <[usize; 4]>::try_from(s.as_slice())
        .map_err(|_| cx.shape_err(format!("expects a 4-D [N, C, H, W] input, got {s:?}")))
}

/// `Reshape(a) -> Transpose(perm) -> Reshape(b)`, the last node named after `cx`.
fn rearrange(
    imp: &mut Importer,
    cx: &NodeCx,
    x: ValueId,
    split: Vec<usize>,
    perm: Vec<usize>,
    out: Vec<usize>,
) -> Result<ValueId, ImportError> {
    let a = imp.emit(
        cx,
        &format!("{}/split", cx.name),
        GraphOp::Reshape { shape: split },
        &[x],
    )?;
    let t = imp.emit(
        cx,
        &format!("{}/move", cx.name),
        GraphOp::Transpose { perm },
        &[a],
    )?;
    imp.emit(cx, cx.name, GraphOp::Reshape { shape: out }, &[t])
}

/// DepthToSpace (Operators.md, DepthToSpace-13): `DCR` (the default) splits the channels as
/// `[b, b, C/b^2]`, `CRD` (from DepthToSpace-11) as `[C/b^2, b, b]`; the two block axes then
/// interleave with H and W.
fn depth_to_space(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let x = cx.input(0)?;
    let [n, c, h, w] = nchw(imp, cx, x)?;
    let b = block_size(cx)?;
    if c % (b * b) != 0 {
        return Err(cx.shape_err(format!(
            "{c} channels are not a multiple of blocksize^2 = {}",
            b * b
        )));
    }
    let crd = block_mode(cx)?;
    let cb = c / (b * b);
    let out = vec![n, cb, h * b, w * b];
    if crd {
        rearrange(
            imp,
            cx,
            x,
            vec![n, cb, b, b, h, w],
            vec![0, 1, 4, 2, 5, 3],
            out,
        )
    } else {
        rearrange(
            imp,
            cx,
            x,
            vec![n, b, b, cb, h, w],
            vec![0, 3, 4, 1, 5, 2],
            out,
        )
    }
}

/// SpaceToDepth (Operators.md, SpaceToDepth-13/-28): the inverse of DepthToSpace; the block
/// offsets go before the channels (`DCR`, the default) or after them (`CRD`, from
/// SpaceToDepth-28).
fn space_to_depth(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let x = cx.input(0)?;
    let [n, c, h, w] = nchw(imp, cx, x)?;
    let b = block_size(cx)?;
    if h % b != 0 || w % b != 0 {
        return Err(cx.shape_err(format!(
            "H = {h} and W = {w} must be multiples of blocksize {b}"
        )));
    }
    let perm = if block_mode(cx)? {
        vec![0, 1, 3, 5, 2, 4]
    } else {
        vec![0, 3, 5, 1, 2, 4]
    };
    let out = vec![n, c * b * b, h / b, w / b];
    rearrange(imp, cx, x, vec![n, c, h / b, b, w / b, b], perm, out)
}

/// The `mode` attribute of DepthToSpace and SpaceToDepth: true for `CRD`, false for `DCR`
/// (the default).
fn block_mode(cx: &NodeCx) -> Result<bool, ImportError> {
    match cx.attrs.string("mode")? {
        None => Ok(false),
        Some(m) if m.eq_ignore_ascii_case(b"DCR") => Ok(false),
        Some(m) if m.eq_ignore_ascii_case(b"CRD") => Ok(true),
        Some(m) => Err(cx.attr_err(format!(
            "mode `{}` is neither DCR nor CRD",
            String::from_utf8_lossy(m)
        ))),
    }
}

/// Size: the element count as an int64 scalar, a constant since shapes are static.
fn size(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let n = imp.ty(cx.input(0)?).elems() as i64;
    Ok(imp.constant(cx.name, fold::i64_tensor(&[], &[n])))
}

/// Dropout in inference: the output is the input and the optional mask is all true (bool from
/// Dropout-10, the input's type in Dropout-7). From Dropout-12 `training_mode` is an input
/// (default false); in training with a non-zero `ratio` (default 0.5) the result is random,
/// which tessera does not compile; with ratio 0 it is the identity again.
fn dropout(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 3)?;
    let x = cx.input(0)?;
    // Dropout-1/-6: `is_test` (default 0) chooses inference; training is random.
    if imp.opset < 7 && !cx.attrs.flag_or("is_test", false)? {
        return Err(training_dropout(
            cx,
            f64::from(cx.attrs.float_or("ratio", 0.5)?),
        ));
    }
    if imp.opset >= 12
        && let Some(t) = cx.opt_input(2)
    {
        let training = const_ints_or_bool(imp, cx, t, "training_mode")?;
        if training.iter().any(|&v| v != 0) {
            let ratio = match cx.opt_input(1) {
                Some(r) => {
                    let t = imp
                        .constant_of(r)
                        .ok_or_else(|| needs_constant(imp, cx, r, "the ratio input"))?;
                    t.to_f64_vec().first().copied().unwrap_or(0.5)
                }
                None => 0.5,
            };
            if ratio != 0.0 {
                return Err(training_dropout(cx, ratio));
            }
        }
    }
    let wants_mask = cx.proto.output.get(1).is_some_and(|o| !o.is_empty());
    if wants_mask {
        let ty = imp.ty(x).clone();
        let mask_type = if imp.opset >= 10 {
            DType::Bool
        } else {
            ty.dtype
        };
        let ones = vec![1.0; ty.elems()];
        let mask = HostTensor::from_f64(mask_type, &ty.shape, &ones);
        let name = format!("{}/mask", cx.name);
        imp.extra_outputs = vec![imp.constant(&name, mask)];
    }
    Ok(x)
}

/// The skip reason for a Dropout that draws random numbers.
fn training_dropout(cx: &NodeCx, ratio: f64) -> ImportError {
    ImportError::Unsupported(UnsupportedOps(vec![UnsupportedOp {
        op_type: format!(
            "Dropout in training mode with ratio {ratio} (random masks are not compiled)"
        ),
        node: cx.name.to_string(),
        domain: String::new(),
    }]))
}

/// A boolean or integer constant's values as integers.
fn const_ints_or_bool(
    imp: &Importer,
    cx: &NodeCx,
    v: ValueId,
    what: &str,
) -> Result<Vec<i64>, ImportError> {
    match imp.constant_of(v) {
        Some(t) if t.dtype == DType::Bool => {
            Ok(t.to_f64_vec().into_iter().map(|b| b as i64).collect())
        }
        _ => const_ints(imp, cx, v, what),
    }
}

/// EyeLike (EyeLike-9): a 2-D tensor of the input's shape with ones on the diagonal `k`
/// (column = row + k) and zeros elsewhere, of type `dtype` (default the input's).
fn eye_like(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 1)?;
    let x = cx.input(0)?;
    let ty = imp.ty(x).clone();
    let [rows, cols] = <[usize; 2]>::try_from(ty.shape.as_slice())
        .map_err(|_| cx.shape_err(format!("expects a 2-D input, got {:?}", ty.shape)))?;
    let dtype = match cx.attrs.int("dtype")? {
        None => ty.dtype,
        Some(code) => {
            let code = i32::try_from(code).unwrap_or(-1);
            dtype_of(code).ok_or_else(|| ImportError::Type {
                what: format!("node \"{}\" (EyeLike)", cx.name),
                elem_type: data_type::name(code).to_string(),
                detail: " (the `dtype` attribute)".into(),
            })?
        }
    };
    let k = cx.attrs.int_or("k", 0)?;
    let values: Vec<f64> = (0..rows * cols)
        .map(|i| {
            let (r, c) = ((i / cols.max(1)) as i64, (i % cols.max(1)) as i64);
            if c - r == k { 1.0 } else { 0.0 }
        })
        .collect();
    Ok(imp.constant(cx.name, HostTensor::from_f64(dtype, &[rows, cols], &values)))
}

/// Trilu (Trilu-14): keeps the elements of the last two axes with `col - row >= k` (`upper`,
/// the default) or `col - row <= k` (lower), zeroing the others; `k` is an optional scalar
/// input. Spelled `Where(mask, x, 0)` with a constant `[rows, cols]` mask.
fn trilu(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    arity(cx, 1, 2)?;
    let x = cx.input(0)?;
    let ty = imp.ty(x).clone();
    let r = ty.shape.len();
    if r < 2 {
        return Err(cx.shape_err(format!("expects rank >= 2, got {:?}", ty.shape)));
    }
    let k = match cx.opt_input(1) {
        Some(v) => match const_ints(imp, cx, v, "the k input")?[..] {
            [k] => k,
            ref other => {
                return Err(cx.shape_err(format!("k must be one integer, got {other:?}")));
            }
        },
        None => 0,
    };
    let upper = cx.attrs.flag_or("upper", true)?;
    let (rows, cols) = (ty.shape[r - 2], ty.shape[r - 1]);
    let mask: Vec<f64> = (0..rows * cols)
        .map(|i| {
            let d = (i % cols) as i128 - (i / cols) as i128;
            let keep = if upper {
                d >= i128::from(k)
            } else {
                d <= i128::from(k)
            };
            if keep { 1.0 } else { 0.0 }
        })
        .collect();
    let mask = imp.constant(
        &format!("{}/mask", cx.name),
        HostTensor::from_f64(DType::Bool, &[rows, cols], &mask),
    );
    let zero = imp.constant(
        &format!("{}/zero", cx.name),
        HostTensor::from_f64(ty.dtype, &[], &[0.0]),
    );
    imp.emit(
        cx,
        cx.name,
        GraphOp::Elementwise(ElementwiseOp::Where),
        &[mask, x, zero],
    )
}

#[cfg(test)]
mod tests {
    use super::super::import_model;
    use super::super::proto::tensor_shape_proto::{Dimension, dimension::Value as Dim};
    use super::super::proto::*;
    use super::*;
    use prost::Message;
    use std::collections::BTreeMap;
    use tessera_ir::graph::evaluate;

    fn axis(dim: usize, s: i64, e: i64, st: i64) -> (usize, i64, usize) {
        let a = slice_axis(dim, s, e, st);
        (a.start, a.step, a.len)
    }

    #[test]
    fn slice_clamps_like_onnx() {
        // numpy: list(range(10))[2:-1:3] = [2, 5, 8].
        assert_eq!(axis(10, 2, -1, 3), (2, 3, 3));
        // Out-of-range ends clamp: [1000:] of 10 is empty; [:1000] is everything.
        assert_eq!(axis(10, 1000, 1000, 1).2, 0);
        assert_eq!(axis(10, 0, 1000, 1), (0, 1, 10));
        // Negative step from past the end: [20:0:-1] of 10 is 9..1, 9 elements.
        assert_eq!(axis(10, 20, 0, -1), (9, -1, 9));
        // INT64_MIN as end with a negative step runs to the front: [::-3] of 10 = 9, 6, 3, 0.
        assert_eq!(axis(10, -1, i64::MIN, -3), (9, -3, 4));
        // Extreme values do not overflow.
        assert_eq!(axis(10, i64::MIN, i64::MAX, i64::MAX), (0, i64::MAX, 1));
        assert_eq!(axis(0, 0, 5, 1).2, 0);
    }

    fn info(name: &str, elem_type: i32, shape: &[i64]) -> ValueInfoProto {
        let dim = shape
            .iter()
            .map(|&v| Dimension {
                value: Some(Dim::DimValue(v)),
                denotation: String::new(),
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type,
                    shape: Some(TensorShapeProto { dim }),
                })),
                denotation: String::new(),
            }),
            doc_string: String::new(),
        }
    }

    fn ints(name: &str, v: &[i64]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: vec![v.len() as i64],
            data_type: data_type::INT64,
            int64_data: v.to_vec(),
            ..Default::default()
        }
    }

    fn attr(name: &str, i: Option<i64>, s: &str) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: if i.is_some() {
                AttributeType::Int
            } else {
                AttributeType::String
            } as i32,
            i: i.unwrap_or(0),
            s: s.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    /// One node `op` on a float input `x` of `shape` (other inputs from `inits`), with `outs`.
    fn one_node(
        opset: i64,
        op: &str,
        ins: &[&str],
        outs: &[&str],
        attribute: Vec<AttributeProto>,
        shape: &[i64],
        inits: Vec<TensorProto>,
    ) -> Result<tessera_ir::graph::Graph, ImportError> {
        let node = NodeProto {
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: outs.iter().map(|s| s.to_string()).collect(),
            name: "n".into(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        };
        let m = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(GraphProto {
                name: "g".into(),
                node: vec![node],
                input: vec![info("x", data_type::FLOAT, shape)],
                output: outs
                    .iter()
                    .map(|o| ValueInfoProto {
                        name: o.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                initializer: inits,
                ..Default::default()
            }),
            ..Default::default()
        };
        import_model(&m.encode_to_vec(), None)
    }

    fn run(g: &tessera_ir::graph::Graph, x: &[f64]) -> BTreeMap<String, Vec<f64>> {
        let shape = g.ty(g.inputs[0]).shape.clone();
        let input = HostTensor::from_f64(DType::F32, &shape, x);
        evaluate(g, &BTreeMap::from([("x".to_string(), input)]))
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_f64_vec()))
            .collect()
    }

    #[test]
    fn split_18_leaves_the_last_part_smaller() {
        let g = one_node(
            18,
            "Split",
            &["x"],
            &["a", "b", "c"],
            vec![attr("num_outputs", Some(3), "")],
            &[7],
            vec![],
        )
        .unwrap();
        let out = run(&g, &[0., 1., 2., 3., 4., 5., 6.]);
        // ceil(7 / 3) = 3: parts of 3, 3 and 1.
        assert_eq!(out["a"], [0., 1., 2.]);
        assert_eq!(out["b"], [3., 4., 5.]);
        assert_eq!(out["c"], [6.]);
        // Split-13 sizes that do not add up to the axis name the node.
        let e = one_node(
            13,
            "Split",
            &["x", "s"],
            &["a", "b"],
            vec![],
            &[7],
            vec![ints("s", &[3, 3])],
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"n\" (Split)"), "{e}");
    }

    #[test]
    fn bad_slice_and_pad_arguments_are_errors_naming_the_node() {
        let init = |s: &[i64]| {
            vec![
                ints("s", &[0]),
                ints("e", &[2]),
                ints("a", &[0]),
                ints("t", s),
            ]
        };
        let e = one_node(
            13,
            "Slice",
            &["x", "s", "e", "a", "t"],
            &["y"],
            vec![],
            &[4],
            init(&[0]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"n\" (Slice)"), "{e}");
        // Wrap padding arrives with Pad-19.
        let pads = vec![ints("p", &[1, 1])];
        let wrap = vec![attr("mode", None, "wrap")];
        let e = one_node(
            18,
            "Pad",
            &["x", "p"],
            &["y"],
            wrap.clone(),
            &[4],
            pads.clone(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("wrap"), "{e}");
        let g = one_node(19, "Pad", &["x", "p"], &["y"], wrap, &[4], pads).unwrap();
        assert_eq!(run(&g, &[0., 1., 2., 3.])["y"], [3., 0., 1., 2., 3., 0.]);
    }

    #[test]
    fn dropout_is_the_identity_unless_it_draws_random_numbers() {
        let scalar = |name: &str, dtype, v: f64| {
            let mut t = TensorProto {
                name: name.into(),
                data_type: dtype,
                ..Default::default()
            };
            if dtype == data_type::BOOL {
                t.int32_data = vec![v as i32];
            } else {
                t.float_data = vec![v as f32];
            }
            t
        };
        let training = |ratio| {
            vec![
                scalar("r", data_type::FLOAT, ratio),
                scalar("t", data_type::BOOL, 1.0),
            ]
        };
        let e = one_node(
            13,
            "Dropout",
            &["x", "r", "t"],
            &["y"],
            vec![],
            &[3],
            training(0.5),
        )
        .unwrap_err();
        assert!(matches!(e, ImportError::Unsupported(_)), "{e}");
        // Ratio 0 in training keeps every element: output = input, mask all true.
        let g = one_node(
            13,
            "Dropout",
            &["x", "r", "t"],
            &["y", "m"],
            vec![],
            &[3],
            training(0.0),
        )
        .unwrap();
        let out = run(&g, &[1., -2., 3.]);
        assert_eq!(out["y"], [1., -2., 3.]);
        assert_eq!(out["m"], [1., 1., 1.]);
        assert_eq!(g.ty(g.outputs[1]).dtype, DType::Bool);
    }

    #[test]
    fn trilu_and_eye_like_by_hand() {
        // Lower triangle with k = -1 of a 3x3: keeps (1, 0), (2, 0), (2, 1).
        let g = one_node(
            14,
            "Trilu",
            &["x", "k"],
            &["y"],
            vec![attr("upper", Some(0), "")],
            &[3, 3],
            vec![TensorProto {
                name: "k".into(),
                data_type: data_type::INT64,
                int64_data: vec![-1],
                ..Default::default()
            }],
        )
        .unwrap();
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        assert_eq!(run(&g, &x)["y"], [0., 0., 0., 4., 0., 0., 7., 8., 0.]);
        // EyeLike k = 1 on [2, 3]: ones at (0, 1) and (1, 2), as int32.
        let g = one_node(
            9,
            "EyeLike",
            &["x"],
            &["y"],
            vec![attr("k", Some(1), ""), attr("dtype", Some(6), "")],
            &[2, 3],
            vec![],
        )
        .unwrap();
        assert_eq!(run(&g, &[0.; 6])["y"], [0., 1., 0., 0., 0., 1.]);
        assert_eq!(g.ty(g.outputs[0]).dtype, DType::I32);
    }
}
