//! Lowering of the indexing operators: `Gather` on run-time data, and [`IndexOp`]
//! (GatherElements, GatherND, ScatterElements, ScatterND, TopK).
//!
//! Constant indices need no selection: each picked slice is a DMA at an address known now (bit
//! exact for every dtype). A Gather from a constant, finite float table (an embedding) with
//! run-time indices is a one-hot matrix times the table (`onehot_matmul`). Other run-time
//! indices go through the compare-select-reduce scheme of
//! `tessera_kernels::library::index` (its module doc says why not a one-hot matmul):
//! 1. `index_keys` turns the index tensor into f32 keys (row-major position of each index
//!    tuple, negative coordinates wrapped, -1 when out of range);
//! 2. `strided_copy` lays out, for every output element, the row of candidates it may take
//!    (and, for scatters, the key of each candidate) in HBM scratch, with broadcasting DMAs;
//! 3. `select_reduce` keeps the candidates whose key matches and reduces them.
//!
//! Out-of-range indices (an error in ONNX; the evaluator refuses them) read nothing: a gather
//! gives 0 there and a scatter ignores the update. Scatter with `reduction=none` and duplicate
//! indices (undefined in ONNX) keeps the last update, as the evaluator does. TopK runs
//! `topk_rows` on the axis moved last.

use super::link::Binding;
use super::{LowerError, Lowering};
use tessera_ir::graph::{IndexOp, Node, ScatterReduction};
use tessera_ir::{DType, HostTensor, TensorId, TensorKind};
use tessera_kernels::library;
use tessera_kernels::library::index::{
    self as lib, CopyDim, LaneKeys, SELECT_MAX_ELEMS, SelectMode, SelectSpec,
};

fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

fn prod(s: &[usize]) -> usize {
    s.iter().product()
}

/// Where a selection's inputs live.
struct Select {
    cand: TensorId,
    key: TensorId,
    lane: Option<TensorId>,
    base: Option<TensorId>,
    y: TensorId,
}

impl Lowering<'_> {
    /// `Gather` whose data or indices are computed at run time.
    pub(super) fn gather(
        &mut self,
        node: &Node,
        axis: usize,
        ins: &[TensorId],
    ) -> Result<(), LowerError> {
        let dt = self.graph.ty(node.inputs[0]).clone();
        let it = self.graph.ty(node.inputs[1]).clone();
        let out = self.result_tensor(node.outputs[0]);
        let a = prod(&dt.shape[..axis]);
        let n = dt.shape[axis];
        let b = prod(&dt.shape[axis + 1..]);
        let m = it.elems();
        if let Some(c) = self.graph.constants.get(&node.inputs[1]) {
            // Constant indices: one DMA per index, copying its slice for every leading index.
            let mut copies = Vec::with_capacity(m);
            for (mi, v) in c.to_f64_vec().into_iter().enumerate() {
                let j = if v < 0.0 { v + n as f64 } else { v };
                if !(j >= 0.0 && j < n as f64) {
                    return Err(Self::unsupported(
                        node,
                        format!("index {v} is out of range for axis {axis} of size {n}"),
                    ));
                }
                copies.push(((j as usize * b) as u64, (mi * b) as u64));
            }
            let dims = [(a, (n * b) as i64, (m * b) as i64), (b, 1, 1)];
            return self.strided(
                node,
                dt.dtype,
                (ins[0], dt.elems()),
                (out, a * m * b),
                &dims,
                &copies,
            );
        }
        if n == 0 {
            return Err(Self::unsupported(node, "indices into an empty axis"));
        }
        let keys = self.keys(node, ins[1], m, &[n], it.dtype)?;
        let finite_table =
            self.graph.constants.get(&node.inputs[0]).is_some_and(|t| {
                t.dtype.is_float() && t.to_f64_vec().iter().all(|v| v.is_finite())
            });
        if finite_table {
            // A constant finite float table (an embedding): one-hot times the table on the tensor
            // engine, exact without NaN or inf, and no candidate scratch. One product per
            // leading index.
            let k = self.kernel(node, lib::onehot_matmul(self.target, m, n, b, dt.dtype))?;
            for i in 0..a {
                let bindings = [
                    Binding {
                        name: "table",
                        tensor: ins[0],
                        offset: (i * n * b) as u64,
                    },
                    Binding::whole("key", keys),
                    Binding {
                        name: "y",
                        tensor: out,
                        offset: (i * m * b) as u64,
                    },
                ];
                self.link(&node.name, &k, &bindings)?;
            }
            return Ok(());
        }
        let e = a * m * b;
        self.check_size(node, e, n)?;
        let cand = self.scratch(&format!("{}.cand", node.name), dt.dtype, &[e * n]);
        let dims = [
            (a, (n * b) as i64, (m * b * n) as i64),
            (m, 0, (b * n) as i64),
            (b, 1, n as i64),
            (n, b as i64, 1),
        ];
        self.strided(
            node,
            dt.dtype,
            (ins[0], dt.elems()),
            (cand, e * n),
            &dims,
            &[(0, 0)],
        )?;
        let key = self.scratch(&format!("{}.key", node.name), DType::F32, &[e]);
        let dims = [(a, 0, (m * b) as i64), (m, 1, b as i64), (b, 0, 1)];
        self.strided(node, DType::F32, (keys, m), (key, e), &dims, &[(0, 0)])?;
        let spec = SelectSpec {
            rows: e,
            lanes: n,
            dtype: dt.dtype,
            lane_keys: LaneKeys::Iota,
            mode: SelectMode::Gather,
        };
        let io = Select {
            cand,
            key,
            lane: None,
            base: None,
            y: out,
        };
        self.select(node, &spec, &io)
    }

    /// The [`IndexOp`]s.
    pub(super) fn index(
        &mut self,
        node: &Node,
        op: &IndexOp,
        ins: &[TensorId],
    ) -> Result<(), LowerError> {
        let g = self.graph;
        let data = g.ty(node.inputs[0]).clone();
        match op {
            IndexOp::GatherElements { axis } => {
                let it = g.ty(node.inputs[1]).clone();
                let out = self.result_tensor(node.outputs[0]);
                let lanes = data.shape[*axis];
                let e = it.elems();
                if lanes == 0 {
                    return Err(Self::unsupported(node, "indices into an empty axis"));
                }
                self.check_size(node, e, lanes)?;
                let key = self.keys(node, ins[1], e, &[lanes], it.dtype)?;
                let ds = row_major(&data.shape);
                let is = row_major(&it.shape);
                let mut dims: Vec<CopyDim> = (0..it.shape.len())
                    .map(|k| {
                        let src = if k == *axis { 0 } else { ds[k] };
                        (it.shape[k], src, is[k] * lanes as i64)
                    })
                    .collect();
                dims.push((lanes, ds[*axis], 1));
                let cand = self.scratch(&format!("{}.cand", node.name), data.dtype, &[e * lanes]);
                self.strided(
                    node,
                    data.dtype,
                    (ins[0], data.elems()),
                    (cand, e * lanes),
                    &dims,
                    &[(0, 0)],
                )?;
                let spec = SelectSpec {
                    rows: e,
                    lanes,
                    dtype: data.dtype,
                    lane_keys: LaneKeys::Iota,
                    mode: SelectMode::Gather,
                };
                let io = Select {
                    cand,
                    key,
                    lane: None,
                    base: None,
                    y: out,
                };
                self.select(node, &spec, &io)
            }
            IndexOp::GatherNd { batch_dims } => {
                let it = g.ty(node.inputs[1]).clone();
                let out = self.result_tensor(node.outputs[0]);
                let (b, q) = (*batch_dims, it.shape.len());
                let m = it.shape[q - 1];
                let bc = prod(&data.shape[..b]);
                let qc = prod(&it.shape[b..q - 1]);
                let t = prod(&data.shape[b..b + m]);
                let s = prod(&data.shape[b + m..]);
                if t == 0 {
                    return Err(Self::unsupported(node, "indices into an empty axis"));
                }
                let e = bc * qc * s;
                self.check_size(node, e, t)?;
                let keys = self.keys(node, ins[1], bc * qc, &data.shape[b..b + m], it.dtype)?;
                let cand = self.scratch(&format!("{}.cand", node.name), data.dtype, &[e * t]);
                let dims = [
                    (bc, (t * s) as i64, (qc * s * t) as i64),
                    (qc, 0, (s * t) as i64),
                    (s, 1, t as i64),
                    (t, s as i64, 1),
                ];
                self.strided(
                    node,
                    data.dtype,
                    (ins[0], data.elems()),
                    (cand, e * t),
                    &dims,
                    &[(0, 0)],
                )?;
                let key = self.scratch(&format!("{}.key", node.name), DType::F32, &[e]);
                let dims = [
                    (bc, qc as i64, (qc * s) as i64),
                    (qc, 1, s as i64),
                    (s, 0, 1),
                ];
                self.strided(
                    node,
                    DType::F32,
                    (keys, bc * qc),
                    (key, e),
                    &dims,
                    &[(0, 0)],
                )?;
                let spec = SelectSpec {
                    rows: e,
                    lanes: t,
                    dtype: data.dtype,
                    lane_keys: LaneKeys::Iota,
                    mode: SelectMode::Gather,
                };
                let io = Select {
                    cand,
                    key,
                    lane: None,
                    base: None,
                    y: out,
                };
                self.select(node, &spec, &io)
            }
            IndexOp::ScatterNd { reduction } => {
                let it = g.ty(node.inputs[1]).clone();
                let out = self.result_tensor(node.outputs[0]);
                let q = it.shape.len();
                let k = it.shape[q - 1];
                let tt = prod(&data.shape[..k]);
                let s = prod(&data.shape[k..]);
                let u = prod(&it.shape[..q - 1]);
                let e = tt * s;
                if u == 0 {
                    let dims = [(e, 1, 1)];
                    return self.strided(node, data.dtype, (ins[0], e), (out, e), &dims, &[(0, 0)]);
                }
                self.check_size(node, e, u)?;
                let keys = self.keys(node, ins[1], u, &data.shape[..k], it.dtype)?;
                let cand = self.scratch(&format!("{}.cand", node.name), data.dtype, &[e * u]);
                let dims = [(tt, 0, (s * u) as i64), (s, 1, u as i64), (u, s as i64, 1)];
                self.strided(
                    node,
                    data.dtype,
                    (ins[2], u * s),
                    (cand, e * u),
                    &dims,
                    &[(0, 0)],
                )?;
                let lane = self.scratch(&format!("{}.lane", node.name), DType::F32, &[e * u]);
                let dims = [(tt, 0, (s * u) as i64), (s, 0, u as i64), (u, 1, 1)];
                self.strided(node, DType::F32, (keys, u), (lane, e * u), &dims, &[(0, 0)])?;
                let own: Vec<f64> = (0..e).map(|i| (i / s) as f64).collect();
                let key = self.f32_weight(&node.name, &own);
                let spec = SelectSpec {
                    rows: e,
                    lanes: u,
                    dtype: data.dtype,
                    lane_keys: LaneKeys::Tensor,
                    mode: SelectMode::Scatter(*reduction),
                };
                let io = Select {
                    cand,
                    key,
                    lane: Some(lane),
                    base: Some(ins[0]),
                    y: out,
                };
                self.select(node, &spec, &io)
            }
            IndexOp::ScatterElements { axis, reduction } => {
                let it = g.ty(node.inputs[1]).clone();
                let out = self.result_tensor(node.outputs[0]);
                self.scatter_elements(node, *axis, *reduction, ins, &data.shape, &it, out)
            }
            IndexOp::TopK {
                axis, k, largest, ..
            } => self.top_k(node, *axis, *k, *largest, ins[0]),
        }
    }

    #[allow(clippy::too_many_arguments)] // the node's operands, as ScatterElements defines them
    fn scatter_elements(
        &mut self,
        node: &Node,
        axis: usize,
        reduction: ScatterReduction,
        ins: &[TensorId],
        dshape: &[usize],
        it: &tessera_ir::graph::TensorType,
        out: TensorId,
    ) -> Result<(), LowerError> {
        let dtype = self.graph.ty(node.inputs[0]).dtype;
        let total = prod(dshape);
        let lanes = it.shape[axis];
        let count = it.elems();
        if count == 0 {
            return self.strided(
                node,
                dtype,
                (ins[0], total),
                (out, total),
                &[(total, 1, 1)],
                &[(0, 0)],
            );
        }
        // The box of data the updates can reach: the indices' extent on every axis but `axis`.
        let mut bx = it.shape.clone();
        bx[axis] = dshape[axis];
        let e = prod(&bx);
        self.check_size(node, e, lanes)?;
        let keys = self.keys(node, ins[1], count, &[dshape[axis]], it.dtype)?;
        let is = row_major(&it.shape);
        let bs = row_major(&bx);
        let ds = row_major(dshape);
        let mut dims: Vec<CopyDim> = (0..bx.len())
            .map(|k| {
                let src = if k == axis { 0 } else { is[k] };
                (bx[k], src, bs[k] * lanes as i64)
            })
            .collect();
        dims.push((lanes, is[axis], 1));
        let cand = self.scratch(&format!("{}.cand", node.name), dtype, &[e * lanes]);
        self.strided(
            node,
            dtype,
            (ins[2], count),
            (cand, e * lanes),
            &dims,
            &[(0, 0)],
        )?;
        let lane = self.scratch(&format!("{}.lane", node.name), DType::F32, &[e * lanes]);
        self.strided(
            node,
            DType::F32,
            (keys, count),
            (lane, e * lanes),
            &dims,
            &[(0, 0)],
        )?;
        let own: Vec<f64> = (0..e)
            .map(|i| ((i as i64 / bs[axis]) % bx[axis] as i64) as f64)
            .collect();
        let key = self.f32_weight(&node.name, &own);
        let whole = bx == dshape;
        let (base, y) = if whole {
            (ins[0], out)
        } else {
            let base = self.scratch(&format!("{}.base", node.name), dtype, &[e]);
            let dims: Vec<CopyDim> = (0..bx.len()).map(|k| (bx[k], ds[k], bs[k])).collect();
            self.strided(node, dtype, (ins[0], total), (base, e), &dims, &[(0, 0)])?;
            (base, self.scratch(&format!("{}.y", node.name), dtype, &[e]))
        };
        let spec = SelectSpec {
            rows: e,
            lanes,
            dtype,
            lane_keys: LaneKeys::Tensor,
            mode: SelectMode::Scatter(reduction),
        };
        let io = Select {
            cand,
            key,
            lane: Some(lane),
            base: Some(base),
            y,
        };
        self.select(node, &spec, &io)?;
        if !whole {
            // Data outside the box is unchanged; the box gets the selection's result.
            self.strided(
                node,
                dtype,
                (ins[0], total),
                (out, total),
                &[(total, 1, 1)],
                &[(0, 0)],
            )?;
            let dims: Vec<CopyDim> = (0..bx.len()).map(|k| (bx[k], bs[k], ds[k])).collect();
            self.strided(node, dtype, (y, e), (out, total), &dims, &[(0, 0)])?;
        }
        Ok(())
    }

    fn top_k(
        &mut self,
        node: &Node,
        axis: usize,
        k: usize,
        largest: bool,
        x: TensorId,
    ) -> Result<(), LowerError> {
        let xt = self.graph.ty(node.inputs[0]).clone();
        let values = self.result_tensor(node.outputs[0]);
        let indices = self.result_tensor(node.outputs[1]);
        let rank = xt.shape.len();
        let cols = xt.shape[axis];
        let rows = xt.elems() / cols.max(1);
        let kern = self.kernel(
            node,
            lib::topk_rows(self.target, rows, cols, k, largest, xt.dtype),
        )?;
        if axis + 1 == rank {
            return self.link(
                &node.name,
                &kern,
                &[
                    Binding::whole("x", x),
                    Binding::whole("values", values),
                    Binding::whole("indices", indices),
                ],
            );
        }
        let mut perm: Vec<usize> = (0..rank).filter(|&i| i != axis).collect();
        perm.push(axis);
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        let moved: Vec<usize> = perm.iter().map(|&p| xt.shape[p]).collect();
        let mut moved_k = moved.clone();
        moved_k[rank - 1] = k;
        let xm = self.scratch(&format!("{}.moved", node.name), xt.dtype, &moved);
        let vm = self.scratch(&format!("{}.values", node.name), xt.dtype, &moved_k);
        let im = self.scratch(&format!("{}.indices", node.name), DType::I64, &moved_k);
        let p = self.kernel(
            node,
            library::permute(self.target, &xt.shape, &perm, xt.dtype),
        )?;
        self.link(
            &node.name,
            &p,
            &[Binding::whole("x", x), Binding::whole("y", xm)],
        )?;
        self.link(
            &node.name,
            &kern,
            &[
                Binding::whole("x", xm),
                Binding::whole("values", vm),
                Binding::whole("indices", im),
            ],
        )?;
        for (src, dst, dtype) in [(vm, values, xt.dtype), (im, indices, DType::I64)] {
            let p = self.kernel(
                node,
                library::permute(self.target, &moved_k, &inverse, dtype),
            )?;
            self.link(
                &node.name,
                &p,
                &[Binding::whole("x", src), Binding::whole("y", dst)],
            )?;
        }
        Ok(())
    }

    fn check_size(&self, node: &Node, rows: usize, lanes: usize) -> Result<(), LowerError> {
        if rows.saturating_mul(lanes) > SELECT_MAX_ELEMS || lanes > lib::MAX_KEY {
            return Err(Self::unsupported(
                node,
                format!(
                    "run-time indices select among {lanes} candidates for each of {rows} outputs; \
                     the compare-select lowering handles at most {SELECT_MAX_ELEMS} pairs"
                ),
            ));
        }
        Ok(())
    }

    /// f32 keys of `count` index tuples into `dims` (see `index_keys`), in a new scratch tensor.
    fn keys(
        &mut self,
        node: &Node,
        idx: TensorId,
        count: usize,
        dims: &[usize],
        idx_dtype: DType,
    ) -> Result<TensorId, LowerError> {
        let key = self.scratch(&format!("{}.keys", node.name), DType::F32, &[count]);
        let k = self.kernel(node, lib::index_keys(self.target, count, dims, idx_dtype))?;
        self.link(
            &node.name,
            &k,
            &[Binding::whole("idx", idx), Binding::whole("key", key)],
        )?;
        Ok(key)
    }

    /// A `strided_copy` from `src` (tensor, elements) to `dst`.
    fn strided(
        &mut self,
        node: &Node,
        dtype: DType,
        src: (TensorId, usize),
        dst: (TensorId, usize),
        dims: &[CopyDim],
        copies: &[(u64, u64)],
    ) -> Result<(), LowerError> {
        let k = self.kernel(
            node,
            lib::strided_copy(self.target, dtype, src.1, dst.1, dims, copies),
        )?;
        self.link(
            &node.name,
            &k,
            &[Binding::whole("x", src.0), Binding::whole("y", dst.0)],
        )
    }

    fn select(&mut self, node: &Node, spec: &SelectSpec, io: &Select) -> Result<(), LowerError> {
        let k = self.kernel(node, lib::select_reduce(self.target, spec))?;
        let mut b = vec![
            Binding::whole("cand", io.cand),
            Binding::whole("key", io.key),
            Binding::whole("y", io.y),
        ];
        if let Some(l) = io.lane {
            b.push(Binding::whole("lane", l));
        }
        if let Some(base) = io.base {
            b.push(Binding::whole("base", base));
        }
        self.link(&node.name, &k, &b)
    }

    /// A weight holding `values` as f32 (each an integer below 2^24, so exact).
    fn f32_weight(&mut self, node: &str, values: &[f64]) -> TensorId {
        self.consts += 1;
        let t = self.linker.add_tensor(
            &format!("{node}.keys{}", self.consts),
            DType::F32,
            &[values.len()],
            TensorKind::Input,
        );
        self.weights
            .push((t, HostTensor::from_f64(DType::F32, &[values.len()], values)));
        t
    }
}
