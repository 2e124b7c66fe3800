//! Import of Attention (Attention-23, -24 and the sliding window of -25) as a graph of MatMul,
//! Softmax, Transpose, Reshape, Concat and element-wise nodes; no attention kernel is needed.
//!
//! The meaning follows the operator's entry in onnx/docs/Operators.md (the diagram
//! `Q*sqrt(scale), K*sqrt(scale) -> MatMul -> softcap -> + bias -> Softmax -> MatMul V`) and the
//! ONNX reference (`onnx/reference/ops/op_attention.py`) where the text is silent:
//!
//! - 3-D inputs `[B, S, H*D]` are split into heads with a Reshape and a Transpose, and the
//!   result is merged back the same way.
//! - Grouped-query attention shares K/V head `h` with query heads `h*G .. h*G+G-1`
//!   (`G = q_num_heads / kv_num_heads`): Q is viewed as `[B, Hkv, G, S, D]` and K, V as
//!   `[B, Hkv, 1, L, D]`, and MatMul's batch broadcasting repeats each K/V head for its group.
//! - The attention bias is the float `attn_mask` (if any) plus one `Where(allowed, 0, -inf)`
//!   whose `allowed` is the conjunction of a boolean `attn_mask`, the causal frontier, the
//!   sliding window and the `nonpad_kv_seqlen` padding mask. A mask shorter than the total
//!   sequence is padded with `-inf` (`False`). The frontier is offset-aligned: query `i` attends
//!   key `j` iff `j <= i + offset`, `offset` the past length, or `nonpad_kv_seqlen[b] - S` per
//!   batch with an external cache (Attention-24 errata).
//! - A query row whose bias is `-inf` everywhere gives zeros (in `Y` and in the mode-3
//!   `qk_matmul_output`), not NaN: the softmax of such a row is replaced by 0 with a `Where`.

use super::ImportError;
use super::import::{Importer, NodeCx};
use super::proto::data_type;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{
    BinaryOp, ElementwiseOp, GraphOp, ReduceKind, ReduceSpec, UnaryOp, ValueId,
};
use tessera_ir::host::HostTensor;

/// Names the `step`-th helper node of `cx`.
pub(super) fn sub(cx: &NodeCx, step: &str) -> String {
    format!("{}/{step}", cx.name)
}

/// One helper node of `cx`, named after `step`.
pub(super) fn node(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    op: GraphOp,
    ins: &[ValueId],
) -> Result<ValueId, ImportError> {
    imp.emit(cx, &sub(cx, step), op, ins)
}

pub(super) fn bin(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    op: BinaryOp,
    a: ValueId,
    b: ValueId,
) -> Result<ValueId, ImportError> {
    node(imp, cx, step, GraphOp::Binary(op), &[a, b])
}

pub(super) fn ew(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    op: ElementwiseOp,
    ins: &[ValueId],
) -> Result<ValueId, ImportError> {
    node(imp, cx, step, GraphOp::Elementwise(op), ins)
}

pub(super) fn reshape(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    v: ValueId,
    shape: Vec<usize>,
) -> Result<ValueId, ImportError> {
    if imp.ty(v).shape == shape {
        return Ok(v);
    }
    node(imp, cx, step, GraphOp::Reshape { shape }, &[v])
}

pub(super) fn transpose(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    v: ValueId,
    perm: Vec<usize>,
) -> Result<ValueId, ImportError> {
    node(imp, cx, step, GraphOp::Transpose { perm }, &[v])
}

/// A reduction over `axes`, keeping them as size-1 dims when `keepdims`.
pub(super) fn reduce(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    kind: ReduceKind,
    axes: Vec<usize>,
    keepdims: bool,
    x: ValueId,
) -> Result<ValueId, ImportError> {
    let spec = ReduceSpec {
        kind,
        axes,
        keepdims,
    };
    node(imp, cx, step, GraphOp::Reduce(spec), &[x])
}

pub(super) fn cast(
    imp: &mut Importer,
    cx: &NodeCx,
    step: &str,
    v: ValueId,
    to: DType,
) -> Result<ValueId, ImportError> {
    if imp.ty(v).dtype == to {
        return Ok(v);
    }
    node(imp, cx, step, GraphOp::Cast { to }, &[v])
}

/// A scalar constant of `dtype`.
pub(super) fn scalar(imp: &mut Importer, cx: &NodeCx, step: &str, dtype: DType, v: f64) -> ValueId {
    imp.constant(&sub(cx, step), HostTensor::from_f64(dtype, &[], &[v]))
}

/// The attributes and static shapes of one Attention node, checked.
struct Plan {
    /// The type of Q, K, V and the results.
    dtype: DType,
    /// The type the products and the bias are computed in: f32 for f16 inputs (the ONNX
    /// reference accumulates f16 products and sums in f32, and keeping the scores, mask and
    /// softmax in f32 matches it), else the inputs' type.
    work: DType,
    /// The inputs were 3-D `[B, S, H*D]`.
    three_d: bool,
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_len: usize,
    head: usize,
    v_head: usize,
    /// Total key length (past + new).
    total: usize,
    /// Past length (0 without a cache).
    past: usize,
    causal: bool,
    /// `left_window_size`, `right_window_size` (Attention-25); -1 leaves a side open.
    window: (i64, i64),
    scale: f64,
    softcap: f64,
    softmax_dtype: DType,
    mode: i64,
}

/// Attention-23/24/25. Returns `Y`; `present_key`, `present_value` and `qk_matmul_output` are
/// the extra outputs.
pub fn attention(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    let n = cx.proto.input.len();
    if !(3..=7).contains(&n) {
        return Err(cx.attr_err(format!("expects 3 to 7 inputs, the node lists {n}")));
    }
    let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let mask = cx.opt_input(3);
    let (past_k, past_v) = (cx.opt_input(4), cx.opt_input(5));
    let nonpad = cx.opt_input(6);
    if nonpad.is_some() && imp.opset < 24 {
        return Err(cx.attr_err("input nonpad_kv_seqlen exists from Attention-24 on"));
    }
    if past_k.is_some() != past_v.is_some() {
        return Err(cx.attr_err("past_key and past_value must be given together"));
    }
    if nonpad.is_some() && past_k.is_some() {
        return Err(cx.attr_err("nonpad_kv_seqlen cannot be combined with past_key/past_value"));
    }
    let (q, k, v, plan) = plan(imp, cx, q, k, v, past_k)?;
    let (k, v) = match (past_k, past_v) {
        (Some(pk), Some(pv)) => {
            let cat = GraphOp::Concat { axis: 2 };
            let k = node(imp, cx, "present_key", cat.clone(), &[pk, k])?;
            (k, node(imp, cx, "present_value", cat, &[pv, v])?)
        }
        _ => (k, v),
    };
    let (present_k, present_v) = (k, v);
    let w = plan.work;
    let q = cast(imp, cx, "q_work", q, w)?;
    let k = cast(imp, cx, "k_work", k, w)?;
    let v = cast(imp, cx, "v_work", v, w)?;
    let (b, hq, hkv, s, l) = (
        plan.batch,
        plan.q_heads,
        plan.kv_heads,
        plan.q_len,
        plan.total,
    );
    let group = hq / hkv;

    // Q*sqrt(scale) and K^T*sqrt(scale), as the spec's diagram (against overflow).
    let root = plan.scale.sqrt();
    let kt = transpose(imp, cx, "k_t", k, vec![0, 1, 3, 2])?;
    let (qs, kts) = if root == 1.0 {
        (q, kt)
    } else {
        let r = scalar(imp, cx, "sqrt_scale", w, root);
        let qs = bin(imp, cx, "q_scaled", BinaryOp::Mul, q, r)?;
        (qs, bin(imp, cx, "k_t_scaled", BinaryOp::Mul, kt, r)?)
    };
    let qk = if group == 1 {
        node(imp, cx, "qk", GraphOp::MatMul, &[qs, kts])?
    } else {
        let qg = reshape(imp, cx, "q_grouped", qs, vec![b, hkv, group, s, plan.head])?;
        let kg = reshape(imp, cx, "k_t_grouped", kts, vec![b, hkv, 1, plan.head, l])?;
        let qk = node(imp, cx, "qk_grouped", GraphOp::MatMul, &[qg, kg])?;
        reshape(imp, cx, "qk", qk, vec![b, hq, s, l])?
    };
    let capped = if plan.softcap > 0.0 {
        let c = scalar(imp, cx, "softcap", w, plan.softcap);
        let d = bin(imp, cx, "qk_div_cap", BinaryOp::Div, qk, c)?;
        let t = node(imp, cx, "qk_tanh", GraphOp::Unary(UnaryOp::Tanh), &[d])?;
        bin(imp, cx, "qk_capped", BinaryOp::Mul, t, c)?
    } else {
        qk
    };
    let bias = attention_bias(imp, cx, &plan, mask, nonpad)?;
    let logits = match bias {
        Some(bias) => bin(imp, cx, "qk_bias", BinaryOp::Add, capped, bias)?,
        None => capped,
    };
    let sm_in = cast(imp, cx, "softmax_in", logits, plan.softmax_dtype)?;
    let mut probs = if plan.softmax_dtype == DType::Bf16 && l <= BF16_STEPWISE_MAX_KEYS {
        softmax_bf16(imp, cx, sm_in)?
    } else {
        node(imp, cx, "softmax", GraphOp::Softmax { axis: 3 }, &[sm_in])?
    };
    if let Some(bias) = bias
        && let Some(masked) = fully_masked_rows(imp, cx, bias)?
    {
        let zero = scalar(imp, cx, "zero_p", plan.softmax_dtype, 0.0);
        probs = ew(
            imp,
            cx,
            "softmax_guarded",
            ElementwiseOp::Where,
            &[masked, zero, probs],
        )?;
    }
    let probs = cast(imp, cx, "probs", probs, w)?;
    // The spec's modes: 0 the raw product, 1 after softcap, 2 with the bias, 3 the softmax
    // (the reference also softcaps mode 0, which the spec's text does not say; no test has it).
    let qk_out = match plan.mode {
        0 => qk,
        1 => capped,
        2 => logits,
        _ => probs,
    };
    let qk_out = cast(imp, cx, "qk_matmul_output", qk_out, plan.dtype)?;
    let y = if group == 1 {
        node(imp, cx, "y4", GraphOp::MatMul, &[probs, v])?
    } else {
        let pg = reshape(imp, cx, "probs_grouped", probs, vec![b, hkv, group, s, l])?;
        let vg = reshape(imp, cx, "v_grouped", v, vec![b, hkv, 1, l, plan.v_head])?;
        let y = node(imp, cx, "y_grouped", GraphOp::MatMul, &[pg, vg])?;
        reshape(imp, cx, "y4", y, vec![b, hq, s, plan.v_head])?
    };
    let y = if plan.three_d {
        let t = transpose(imp, cx, "y_bshd", y, vec![0, 2, 1, 3])?;
        reshape(imp, cx, "y3", t, vec![b, s, hq * plan.v_head])?
    } else {
        y
    };
    let y = cast(imp, cx, "y", y, plan.dtype)?;
    imp.extra_outputs = vec![present_k, present_v, qk_out];
    Ok(y)
}

/// Checks the node, reads its attributes and brings Q, K, V to `[B, H, S, D]`.
fn plan(
    imp: &mut Importer,
    cx: &NodeCx,
    q: ValueId,
    k: ValueId,
    v: ValueId,
    past_k: Option<ValueId>,
) -> Result<(ValueId, ValueId, ValueId, Plan), ImportError> {
    let a = &cx.attrs;
    let dtype = imp.ty(q).dtype;
    if !dtype.is_float() {
        return Err(cx.shape_err(format!("Q must be a float tensor, it is {dtype}")));
    }
    for (what, x) in [("K", k), ("V", v)] {
        if imp.ty(x).dtype != dtype {
            return Err(cx.shape_err(format!("{what} is {} but Q is {dtype}", imp.ty(x).dtype)));
        }
    }
    let rank = imp.ty(q).shape.len();
    if imp.ty(k).shape.len() != rank || imp.ty(v).shape.len() != rank {
        return Err(cx.shape_err("Q, K and V must have the same rank"));
    }
    let q_heads_attr = a.int("q_num_heads")?;
    let kv_heads_attr = a.int("kv_num_heads")?;
    let heads = |x: Option<i64>, what: &str| {
        x.and_then(|h| usize::try_from(h).ok())
            .filter(|&h| h > 0)
            .ok_or_else(|| cx.attr_err(format!("3-D inputs need a positive {what}")))
    };
    let (q, k, v, three_d) = match rank {
        3 => {
            let hq = heads(q_heads_attr, "q_num_heads")?;
            let hkv = heads(kv_heads_attr, "kv_num_heads")?;
            let q = split_heads(imp, cx, "q", q, hq)?;
            let k = split_heads(imp, cx, "k", k, hkv)?;
            let v = split_heads(imp, cx, "v", v, hkv)?;
            (q, k, v, true)
        }
        4 => {
            if imp.opset >= 25 && (q_heads_attr.is_some() || kv_heads_attr.is_some()) {
                return Err(
                    cx.attr_err("q_num_heads and kv_num_heads must not be given with 4-D inputs")
                );
            }
            (q, k, v, false)
        }
        r => return Err(cx.shape_err(format!("Q, K and V must be 3-D or 4-D, they are {r}-D"))),
    };
    let (qs, ks, vs) = (
        imp.ty(q).shape.clone(),
        imp.ty(k).shape.clone(),
        imp.ty(v).shape.clone(),
    );
    let [batch, q_heads, q_len, head] = [qs[0], qs[1], qs[2], qs[3]];
    let [kb, kv_heads, kv_len, k_head] = [ks[0], ks[1], ks[2], ks[3]];
    if kb != batch || vs[0] != batch || k_head != head || vs[1] != kv_heads || vs[2] != kv_len {
        return Err(cx.shape_err(format!(
            "Q {qs:?}, K {ks:?} and V {vs:?} (as [batch, heads, sequence, head size]) do not \
             fit together"
        )));
    }
    for (x, h) in [(q_heads_attr, q_heads), (kv_heads_attr, kv_heads)] {
        if x.is_some_and(|x| x != h as i64) {
            return Err(cx.attr_err(format!(
                "the head counts q_num_heads={q_heads_attr:?}, kv_num_heads={kv_heads_attr:?} \
                 do not match the inputs' {q_heads} and {kv_heads}"
            )));
        }
    }
    if kv_heads == 0 || !q_heads.is_multiple_of(kv_heads) {
        return Err(cx.shape_err(format!(
            "q_num_heads ({q_heads}) must be a multiple of kv_num_heads ({kv_heads})"
        )));
    }
    let past = match past_k {
        Some(pk) => imp.ty(pk).shape.get(2).copied().unwrap_or(0),
        None => 0,
    };
    let scale = match a.float("scale")? {
        Some(s) => f64::from(s),
        None => 1.0 / (head as f64).sqrt(),
    };
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(cx.attr_err(format!("scale must be positive, got {scale}")));
    }
    let softmax_dtype = match a.int("softmax_precision")? {
        None if dtype == DType::F16 => DType::F32,
        None => dtype,
        // double: computed in f32, the widest float the target has.
        Some(p) if p == i64::from(data_type::FLOAT) || p == i64::from(data_type::DOUBLE) => {
            DType::F32
        }
        Some(p) if p == i64::from(data_type::FLOAT16) => DType::F16,
        Some(p) if p == i64::from(data_type::BFLOAT16) => DType::Bf16,
        Some(p) => {
            return Err(cx.attr_err(format!(
                "softmax_precision {p} is not a float type (1, 10, 11 or 16)"
            )));
        }
    };
    let mode = a.int_or("qk_matmul_output_mode", 0)?;
    if !(0..=3).contains(&mode) {
        return Err(cx.attr_err(format!("qk_matmul_output_mode must be 0 to 3, got {mode}")));
    }
    let window = if imp.opset >= 25 {
        let side = |name: &str| -> Result<i64, ImportError> {
            let w = a.int_or(name, -1)?;
            if w < -1 {
                return Err(cx.attr_err(format!("{name} must be -1 or non-negative, got {w}")));
            }
            Ok(w)
        };
        (side("left_window_size")?, side("right_window_size")?)
    } else {
        (-1, -1)
    };
    let work = if dtype == DType::F16 {
        DType::F32
    } else {
        dtype
    };
    let plan = Plan {
        dtype,
        work,
        three_d,
        batch,
        q_heads,
        kv_heads,
        q_len,
        head,
        v_head: vs[3],
        total: past + kv_len,
        past,
        causal: a.flag_or("is_causal", false)?,
        window,
        scale,
        softcap: f64::from(a.float_or("softcap", 0.0)?),
        softmax_dtype,
        mode,
    };
    Ok((q, k, v, plan))
}

/// `[B, S, H*D]` to `[B, H, S, D]`.
fn split_heads(
    imp: &mut Importer,
    cx: &NodeCx,
    what: &str,
    x: ValueId,
    heads: usize,
) -> Result<ValueId, ImportError> {
    let shape = imp.ty(x).shape.clone();
    let hidden = shape[2];
    if !hidden.is_multiple_of(heads) {
        return Err(cx.shape_err(format!(
            "{what}'s hidden size {hidden} is not a multiple of its {heads} heads"
        )));
    }
    let split = vec![shape[0], shape[1], heads, hidden / heads];
    let x = reshape(imp, cx, &format!("{what}_split"), x, split)?;
    transpose(imp, cx, &format!("{what}_heads"), x, vec![0, 2, 1, 3])
}

/// The additive bias (broadcastable to `[B, Hq, S, L]`), or `None` when nothing masks.
fn attention_bias(
    imp: &mut Importer,
    cx: &NodeCx,
    plan: &Plan,
    mask: Option<ValueId>,
    nonpad: Option<ValueId>,
) -> Result<Option<ValueId>, ImportError> {
    let (s, l) = (plan.q_len, plan.total);
    let mut float_mask = None;
    let mut allowed: Vec<ValueId> = Vec::new();
    if let Some(m) = mask {
        let ty = imp.ty(m).clone();
        let Some(&last) = ty.shape.last() else {
            return Err(cx.shape_err("attn_mask must have rank at least 1"));
        };
        if last > l {
            return Err(cx.shape_err(format!(
                "attn_mask's last dim {last} is longer than the total sequence length {l}"
            )));
        }
        // The mask broadcasts into the scores [B, Hq, S, L], never the other way.
        let scores = [plan.batch, plan.q_heads, s, l];
        let fits = ty.shape.len() <= 4
            && (ty.shape.iter().rev().skip(1))
                .zip(scores.iter().rev().skip(1))
                .all(|(&m, &t)| m == 1 || m == t);
        if !fits {
            return Err(cx.shape_err(format!(
                "attn_mask {:?} does not broadcast to the scores {scores:?}",
                ty.shape
            )));
        }
        let is_bool = ty.dtype == DType::Bool;
        if !is_bool && !ty.dtype.is_float() {
            return Err(cx.shape_err(format!(
                "attn_mask must be bool or float, it is {}",
                ty.dtype
            )));
        }
        let m = if is_bool {
            m
        } else {
            cast(imp, cx, "mask_cast", m, plan.work)?
        };
        // The spec pads a short mask to the total length with -inf (False).
        let m = if last < l {
            let axis = ty.shape.len() - 1;
            let mut pad_shape = ty.shape.clone();
            pad_shape[axis] = l - last;
            let elems: usize = pad_shape.iter().product();
            let (dt, fill) = if is_bool {
                (DType::Bool, 0.0)
            } else {
                (plan.work, f64::NEG_INFINITY)
            };
            let pad = imp.constant(
                &sub(cx, "mask_pad"),
                HostTensor::from_f64(dt, &pad_shape, &vec![fill; elems]),
            );
            node(imp, cx, "mask_padded", GraphOp::Concat { axis }, &[m, pad])?
        } else {
            m
        };
        if is_bool {
            allowed.push(m);
        } else {
            float_mask = Some(m);
        }
    }
    let causal = plan.causal;
    let (left, right) = plan.window;
    let windowed = left >= 0 || right >= 0;
    match nonpad {
        // External cache: the frontier and the window move with each batch's length n.
        Some(n) => {
            let nt = imp.ty(n).clone();
            if nt.shape != [plan.batch] || !nt.dtype.is_integer() {
                return Err(cx.shape_err(format!(
                    "nonpad_kv_seqlen must be an integer tensor of shape [{}], it is {nt}",
                    plan.batch
                )));
            }
            let n = cast(imp, cx, "nonpad_i64", n, DType::I64)?;
            let n = reshape(imp, cx, "nonpad_b111", n, vec![plan.batch, 1, 1, 1])?;
            // Padding: key j is valid iff j < n[b].
            let iota: Vec<i64> = (0..l as i64).collect();
            let iota = imp.constant(&sub(cx, "key_index"), fold_i64(&[1, 1, 1, l], &iota));
            allowed.push(ew(imp, cx, "nonpad_keys", ElementwiseOp::Less, &[iota, n])?);
            // With offset = n - S, `j <= i + offset + w` is `n >= j - i + S - w`.
            let bound = |w: i64| -> HostTensor {
                let vals: Vec<i64> = (0..s as i64)
                    .flat_map(|i| (0..l as i64).map(move |j| j - i + s as i64 - w))
                    .collect();
                fold_i64(&[1, 1, s, l], &vals)
            };
            if causal {
                let c = imp.constant(&sub(cx, "causal_bound"), bound(0));
                let op = ElementwiseOp::GreaterOrEqual;
                allowed.push(ew(imp, cx, "causal", op, &[n, c])?);
            }
            if right >= 0 {
                let c = imp.constant(&sub(cx, "window_right_bound"), bound(right));
                let op = ElementwiseOp::GreaterOrEqual;
                allowed.push(ew(imp, cx, "window_right", op, &[n, c])?);
            }
            if left >= 0 {
                // i + n - S - j <= left  is  n <= j - i + S + left.
                let c = imp.constant(&sub(cx, "window_left_bound"), bound(-left));
                let op = ElementwiseOp::LessOrEqual;
                allowed.push(ew(imp, cx, "window_left", op, &[n, c])?);
            }
        }
        None if causal || windowed => {
            // diff = i + offset - j; causal needs diff >= 0, the window -right <= diff <= left.
            let offset = plan.past as i64;
            let vals: Vec<f64> = (0..s as i64)
                .flat_map(|i| (0..l as i64).map(move |j| i + offset - j))
                .map(|diff| {
                    let ok = (!causal || diff >= 0)
                        && (left < 0 || diff <= left)
                        && (right < 0 || -diff <= right);
                    if ok { 1.0 } else { 0.0 }
                })
                .collect();
            let c = HostTensor::from_f64(DType::Bool, &[s, l], &vals);
            allowed.push(imp.constant(&sub(cx, "causal_window"), c));
        }
        None => {}
    }
    let mut allow = None;
    for (i, a) in allowed.into_iter().enumerate() {
        allow = Some(match allow {
            None => a,
            Some(p) => ew(imp, cx, &format!("allowed{i}"), ElementwiseOp::And, &[p, a])?,
        });
    }
    let mask_bias = match allow {
        Some(a) => {
            let zero = scalar(imp, cx, "zero_bias", plan.work, 0.0);
            let ninf = scalar(imp, cx, "neg_inf", plan.work, f64::NEG_INFINITY);
            let op = ElementwiseOp::Where;
            Some(ew(imp, cx, "mask_bias", op, &[a, zero, ninf])?)
        }
        None => None,
    };
    Ok(match (float_mask, mask_bias) {
        (Some(f), Some(m)) => Some(bin(imp, cx, "bias", BinaryOp::Add, f, m)?),
        (f, m) => f.or(m),
    })
}

/// A bool `[..., S, 1]` that holds where the bias row is `-inf` everywhere, or `None` when it
/// is a constant that holds nowhere (then no guard is needed).
fn fully_masked_rows(
    imp: &mut Importer,
    cx: &NodeCx,
    bias: ValueId,
) -> Result<Option<ValueId>, ImportError> {
    let rank = imp.ty(bias).shape.len();
    let row_max = reduce(
        imp,
        cx,
        "bias_row_max",
        ReduceKind::Max,
        vec![rank - 1],
        true,
        bias,
    )?;
    let op = ElementwiseOp::IsInf {
        positive: false,
        negative: true,
    };
    let masked = ew(imp, cx, "row_masked", op, &[row_max])?;
    if let Some(t) = imp.constant_of(masked)
        && t.to_f64_vec().iter().all(|&x| x == 0.0)
    {
        return Ok(None);
    }
    Ok(Some(masked))
}

/// The longest key sequence whose bf16 softmax is computed step by step ([`softmax_bf16`]);
/// its key-by-key sum costs two nodes per key over the whole score tensor, so longer rows use
/// the fused Softmax kernel (f32 inside, rounded once: at least as accurate).
const BF16_STEPWISE_MAX_KEYS: usize = 64;

/// Softmax over the last axis of a bf16 tensor with every step rounded to bf16 and the
/// denominator summed key by key (each partial sum rounded), which is what the ONNX reference
/// computes for bf16 (`max`, `x - max`, `exp`, `sum`, `/` as bf16 array operations) and what its
/// bf16 test data, checked to 1e-3 (under one bf16 ulp), holds. The fused Softmax kernel
/// computes in f32 and rounds once, which differs in the last bit.
fn softmax_bf16(imp: &mut Importer, cx: &NodeCx, x: ValueId) -> Result<ValueId, ImportError> {
    let shape = imp.ty(x).shape.clone();
    let last = shape.len() - 1;
    let l = shape[last];
    let max = reduce(imp, cx, "sm_max", ReduceKind::Max, vec![last], true, x)?;
    let d = bin(imp, cx, "sm_shifted", BinaryOp::Sub, x, max)?;
    let e = node(imp, cx, "sm_exp", GraphOp::Unary(UnaryOp::Exp), &[d])?;
    // Key j's term alone: e * onehot(j) summed over the keys (one non-zero term, exact).
    let mut sum = None;
    for j in 0..l {
        let mut pick = vec![0.0; l];
        pick[j] = 1.0;
        let mut pick_shape = vec![1; shape.len()];
        pick_shape[last] = l;
        let sel = imp.constant(
            &sub(cx, &format!("sm_pick{j}")),
            HostTensor::from_f64(DType::Bf16, &pick_shape, &pick),
        );
        let masked = bin(imp, cx, &format!("sm_term{j}_all"), BinaryOp::Mul, e, sel)?;
        let step = format!("sm_term{j}");
        let term = reduce(imp, cx, &step, ReduceKind::Sum, vec![last], true, masked)?;
        sum = Some(match sum {
            None => term,
            Some(acc) => bin(imp, cx, &format!("sm_sum{j}"), BinaryOp::Add, acc, term)?,
        });
    }
    let sum = sum.ok_or_else(|| cx.shape_err("the key sequence is empty"))?;
    bin(imp, cx, "softmax", BinaryOp::Div, e, sum)
}

fn fold_i64(shape: &[usize], vals: &[i64]) -> HostTensor {
    super::fold::i64_tensor(shape, vals)
}
