//! Kernels for indexing with run-time indices: index normalisation (`index_keys`), strided
//! HBM-to-HBM copies that lay candidates out (`strided_copy`), the compare-select-reduce
//! selection (`select_reduce`) behind Gather, GatherElements, GatherND, ScatterElements and
//! ScatterND, and `topk_rows`.
//!
//! The ISA has no indirect DMA: an address cannot come from data. So an index is *compared*
//! rather than followed. Every output element gets a row of candidates (all the values it might
//! take, laid out by stride-0 / strided DMAs, which are addresses known at compile time), a key
//! per candidate (its position, by `iota`, or the run-time key of an update) and a wanted key;
//! a 0/1 mask of the candidates whose key matches selects them (`select`, a move), and a
//! reduction over the row combines what was selected.
//!
//! Why select-and-reduce on the vector engine rather than a one-hot matrix times the data on
//! the tensor engine: the matmul multiplies every candidate by its 0/1 weight, and `inf * 0` and
//! `NaN * 0` are NaN, so one non-finite value anywhere in the table would poison every output;
//! it also rounds integer data through fp32 (and the tensor engine takes only floats). `select`
//! moves values without arithmetic, so the selected value arrives bit-exact whatever its dtype,
//! and the reduction adds it to zeros only (exact; `-0.0` becomes `+0.0`, the one visible
//! difference). Integer tiles compute exactly below 2^53, the ISA's integer range, which is
//! also the reference evaluator's. The price is `rows x candidates` work and scratch, so the
//! lowering caps the problem size (see [`SELECT_MAX_ELEMS`]).
//!
//! Keys are f32: positions are below 2^24 ([`MAX_KEY`]), where f32 integers are exact. An index
//! outside `[-d, d)` (ONNX calls it an error) gets the key -1, which matches nothing: a gather
//! then yields 0 and a scatter leaves the element alone.

use super::{FREE_CHUNK, check_shape};
use crate::{KernelBuilder, KernelError};
use tessera_ir::graph::ScatterReduction;
use tessera_ir::{AffineExpr, AluOp, DType, ReduceOp, TargetSpec, TileProgram};

/// Largest candidate count (and key) a selection handles: f32 holds every integer below 2^24.
pub const MAX_KEY: usize = 1 << 24;

/// Largest `rows x candidates` the lowering hands to [`select_reduce`] (the laid-out
/// candidates live in HBM scratch).
pub const SELECT_MAX_ELEMS: usize = 1 << 24;

/// Longest row [`topk_rows`] keeps in SBUF: nine row tiles of at most 8 bytes an element
/// (three in the data's dtype, six f32) are 120 KiB per partition at this length, inside the
/// 192 KiB of trn1.
pub const TOPK_MAX_COLS: usize = 2560;

/// Pieces of `n` consecutive items as `(first, rows, cols)`: `rows` partitions of `cols` items
/// each, filling the partitions, plus a one-row tail.
fn pieces(n: usize, partitions: usize, max_cols: usize) -> Vec<(usize, usize, usize)> {
    let cols = n.div_ceil(partitions).clamp(1, max_cols.max(1));
    let full = n / cols;
    let mut out = Vec::new();
    let mut row = 0;
    while row < full {
        let rows = (full - row).min(partitions);
        out.push((row * cols, rows, cols));
        row += rows;
    }
    if full * cols < n {
        out.push((full * cols, 1, n - full * cols));
    }
    out
}

fn unsupported(kernel: &'static str, detail: String) -> KernelError {
    KernelError::Unsupported { kernel, detail }
}

/// `idx`[count, K] (int32 or int64 tuples of coordinates into `dims`, negative ones counting
/// from the end) -> `key`[count] (f32): each tuple's row-major position in `dims`, or -1 when a
/// coordinate is outside `[-d, d)`.
pub fn index_keys(
    target: &TargetSpec,
    count: usize,
    dims: &[usize],
    idx_dtype: DType,
) -> Result<TileProgram, KernelError> {
    const NAME: &str = "index_keys";
    let k = dims.len();
    check_shape(NAME, "idx", &[count, k])?;
    let positions = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if positions.is_none_or(|n| n == 0 || n > MAX_KEY) {
        return Err(unsupported(
            NAME,
            format!("index space {dims:?} is empty or has more than {MAX_KEY} positions"),
        ));
    }
    let mut kb = KernelBuilder::new(NAME, target);
    let idx = kb.input("idx", idx_dtype, &[count, k])?;
    let key = kb.output("key", DType::F32, &[count])?;
    let max_cols = (FREE_CHUNK / k).max(1);
    for (first, rows, cols) in pieces(count, target.partitions as usize, max_cols) {
        let p = rows as u32;
        let c = cols as u32;
        let xt = kb.sbuf("idx", DType::F32, p, &[cols, k])?;
        kb.dma_copy(
            &xt,
            idx.ap(
                (first * k) as u64,
                &[((cols * k) as i64, p), (1, c * k as u32)],
            ),
        )?;
        let lin = kb.sbuf("lin", DType::F32, p, &[cols])?;
        let valid = kb.sbuf("valid", DType::F32, p, &[cols])?;
        let f = kb.sbuf("f", DType::F32, p, &[cols])?;
        let t = kb.sbuf("t", DType::F32, p, &[cols])?;
        kb.memset(&lin, 0.0)?;
        kb.memset(&valid, 1.0)?;
        for (j, &d) in dims.iter().enumerate() {
            let comp = xt.ap(0..p, j as u64, &[(k as i64, c)]);
            // f = x + d * (x < 0): negative coordinates count from the end.
            kb.tensor_scalar_on(
                tessera_ir::Engine::Dve,
                &t,
                &comp,
                crate::Step::new(AluOp::Lt, 0.0),
                Some(crate::Step::new(AluOp::Mul, d as f64)),
            )?;
            kb.tensor_tensor(&f, &comp, AluOp::Add, &t)?;
            // valid &= 0 <= f < d
            kb.tensor_scalar(&t, &f, AluOp::Ge, 0.0)?;
            kb.tensor_tensor(&valid, &valid, AluOp::Mul, &t)?;
            kb.tensor_scalar(&t, &f, AluOp::Lt, d as f64)?;
            kb.tensor_tensor(&valid, &valid, AluOp::Mul, &t)?;
            // lin = lin * d + f (Horner over the tuple).
            kb.tensor_scalar(&lin, &lin, AluOp::Mul, d as f64)?;
            kb.tensor_tensor(&lin, &lin, AluOp::Add, &f)?;
        }
        kb.memset(&t, -1.0)?;
        kb.select(&f, &valid, &lin, &t)?;
        kb.dma_copy(key.ap(first as u64, &[(cols as i64, p), (1, c)]), &f)?;
        for tile in [xt, lin, valid, f, t] {
            kb.free(tile)?;
        }
    }
    kb.finish()
}

/// One dimension of a [`strided_copy`]: its size and the source and destination strides.
pub type CopyDim = (usize, i64, i64);

/// `x`[src_elems] -> `y`[dst_elems] by DMA: for each `(src_offset, dst_offset)` in `copies`,
/// every index of `dims` copies `x[src_offset + sum i*src_stride]` to
/// `y[dst_offset + sum i*dst_stride]`. Source strides may be 0 (a broadcast read). Elements of
/// `y` no copy names are left untouched.
pub fn strided_copy(
    target: &TargetSpec,
    dtype: DType,
    src_elems: usize,
    dst_elems: usize,
    dims: &[CopyDim],
    copies: &[(u64, u64)],
) -> Result<TileProgram, KernelError> {
    const NAME: &str = "strided_copy";
    check_shape(NAME, "x", &[src_elems])?;
    check_shape(NAME, "y", &[dst_elems])?;
    // Drop size-1 dims, merge an outer dim into the next one when both strides line up.
    let mut merged: Vec<CopyDim> = Vec::new();
    for &(size, s, d) in dims {
        if size == 0 {
            return Err(unsupported(NAME, "an empty dimension".into()));
        }
        if size == 1 {
            continue;
        }
        merged.push((size, s, d));
    }
    let mut i = merged.len();
    while i > 1 {
        i -= 1;
        let (inner, outer) = (merged[i], merged[i - 1]);
        if outer.1 == inner.1 * inner.0 as i64 && outer.2 == inner.2 * inner.0 as i64 {
            merged[i - 1] = (outer.0 * inner.0, inner.1, inner.2);
            merged.remove(i);
        }
    }
    if merged.is_empty() {
        merged.push((1, 1, 1));
    }
    let max_dims = target.max_free_dims + 1;
    let split = merged.len().saturating_sub(max_dims);
    let (outer, inner) = merged.split_at(split);
    let count: usize = outer.iter().map(|d| d.0).product();
    if count.saturating_mul(copies.len()) > 1 << 16 {
        return Err(unsupported(
            NAME,
            format!("{} DMAs", count.saturating_mul(copies.len())),
        ));
    }
    let mut kb = KernelBuilder::new(NAME, target);
    let x = kb.input("x", dtype, &[src_elems])?;
    let y = kb.output("y", dtype, &[dst_elems])?;
    let src_dims: Vec<(i64, u32)> = inner.iter().map(|d| (d.1, d.0 as u32)).collect();
    let dst_dims: Vec<(i64, u32)> = inner.iter().map(|d| (d.2, d.0 as u32)).collect();
    for &(so, d_o) in copies {
        for mut flat in 0..count {
            let (mut s_off, mut d_off) = (so as i64, d_o as i64);
            for d in outer.iter().rev() {
                let i = (flat % d.0) as i64;
                flat /= d.0;
                s_off += i * d.1;
                d_off += i * d.2;
            }
            kb.dma_copy(y.ap(d_off as u64, &dst_dims), x.ap(s_off as u64, &src_dims))?;
        }
    }
    kb.finish()
}

/// What [`select_reduce`] makes of the selected candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectMode {
    /// The selected candidate (0 when none matches).
    Gather,
    /// `base` combined with every selected candidate (unchanged when none matches); with
    /// `None`, the last matching candidate replaces it (updates apply in order, as the
    /// reference evaluator and onnxruntime apply them; ONNX leaves duplicates undefined).
    Scatter(ScatterReduction),
}

/// Where the candidates' keys come from in [`select_reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneKeys {
    /// Candidate `j` has key `j`.
    Iota,
    /// Tensor `lane`[rows, lanes] (f32).
    Tensor,
}

/// The shape of a [`select_reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectSpec {
    /// Output elements.
    pub rows: usize,
    /// Candidates per output element.
    pub lanes: usize,
    /// Data dtype (of `cand`, `base` and `y`).
    pub dtype: DType,
    /// Where candidate keys come from.
    pub lane_keys: LaneKeys,
    /// Gather or scatter.
    pub mode: SelectMode,
}

/// `cand`[rows, lanes], `key`[rows] (f32), optional `lane`[rows, lanes] (f32) and, when
/// scattering, `base`[rows] -> `y`[rows]: row `r` selects the candidates whose key equals
/// `key[r]` and reduces them as `mode` says.
pub fn select_reduce(target: &TargetSpec, spec: &SelectSpec) -> Result<TileProgram, KernelError> {
    const NAME: &str = "select_reduce";
    let SelectSpec {
        rows,
        lanes,
        dtype,
        lane_keys,
        mode,
    } = *spec;
    check_shape(NAME, "cand", &[rows, lanes])?;
    if lanes > MAX_KEY {
        return Err(unsupported(
            NAME,
            format!("{lanes} candidates (at most {MAX_KEY})"),
        ));
    }
    let mut kb = KernelBuilder::new(NAME, target);
    let cand = kb.input("cand", dtype, &[rows, lanes])?;
    let key = kb.input("key", DType::F32, &[rows])?;
    let lane = match lane_keys {
        LaneKeys::Tensor => Some(kb.input("lane", DType::F32, &[rows, lanes])?),
        LaneKeys::Iota => None,
    };
    let base = match mode {
        SelectMode::Scatter(_) => Some(kb.input("base", dtype, &[rows])?),
        SelectMode::Gather => None,
    };
    let y = kb.output("y", dtype, &[rows])?;
    let (reduce, combine, fill) = match mode {
        SelectMode::Gather
        | SelectMode::Scatter(ScatterReduction::Add)
        | SelectMode::Scatter(ScatterReduction::None) => (ReduceOp::Sum, AluOp::Add, Some(0.0)),
        SelectMode::Scatter(ScatterReduction::Mul) => (ReduceOp::Prod, AluOp::Mul, Some(1.0)),
        // Unselected lanes hold the row's own value (an identity of max / min whatever the
        // dtype), and the base is combined once more at the end.
        SelectMode::Scatter(ScatterReduction::Max) => (ReduceOp::Max, AluOp::Max, None),
        SelectMode::Scatter(ScatterReduction::Min) => (ReduceOp::Min, AluOp::Min, None),
    };
    let last_wins = mode == SelectMode::Scatter(ScatterReduction::None);
    let chunk = lanes.min(FREE_CHUNK);
    let max_rows_per_part = (FREE_CHUNK / chunk).max(1);
    for (first, nrows, cols) in pieces(rows, target.partitions as usize, max_rows_per_part) {
        let p = nrows as u32;
        let c = cols as u32;
        let row_ap = [(cols as i64, p), (1, c)];
        let kt = kb.sbuf("key", DType::F32, p, &[cols])?;
        kb.dma_copy(&kt, key.ap(first as u64, &row_ap))?;
        let bt = match &base {
            Some(b) => {
                let t = kb.sbuf("base", dtype, p, &[cols])?;
                kb.dma_copy(&t, b.ap(first as u64, &row_ap))?;
                Some(t)
            }
            None => None,
        };
        let acc = kb.sbuf("acc", dtype, p, &[cols])?;
        let part = kb.sbuf("part", dtype, p, &[cols])?;
        let hit = kb.sbuf("hit", DType::F32, p, &[cols])?;
        let hit_part = kb.sbuf("hit_part", DType::F32, p, &[cols])?;
        let iota = |j0: usize| AffineExpr {
            base: j0 as i64,
            partition: 0,
            free: vec![0, 1],
        };
        let lane_ap = |w: usize| [((cols * lanes) as i64, p), (lanes as i64, c), (1, w as u32)];
        if last_wins {
            // Pass 1: `hit` = the last lane whose key matches, or -1.
            for (ci, j0) in (0..lanes).step_by(chunk).enumerate() {
                let w = chunk.min(lanes - j0);
                let lt = kb.sbuf("lane", DType::F32, p, &[cols, w])?;
                match &lane {
                    None => kb.iota(&lt, iota(j0))?,
                    Some(l) => kb.dma_copy(&lt, l.ap((first * lanes + j0) as u64, &lane_ap(w)))?,
                }
                let mask = kb.sbuf("mask", DType::F32, p, &[cols, w])?;
                let key_b = kt.ap(0..p, 0, &[(1, c), (0, w as u32)]);
                kb.tensor_tensor(&mask, &lt, AluOp::Eq, &key_b)?;
                let pos = kb.sbuf("pos", DType::F32, p, &[cols, w])?;
                kb.iota(&pos, iota(j0))?;
                kb.memset(&lt, -1.0)?;
                kb.select(&lt, &mask, &pos, &lt)?;
                let dst = if ci == 0 { &hit } else { &hit_part };
                kb.tensor_reduce(dst, &lt, ReduceOp::Max, 1)?;
                if ci > 0 {
                    kb.tensor_tensor(&hit, &hit, AluOp::Max, &hit_part)?;
                }
                for t in [lt, mask, pos] {
                    kb.free(t)?;
                }
            }
        }
        for (ci, j0) in (0..lanes).step_by(chunk).enumerate() {
            let w = chunk.min(lanes - j0);
            let lt = kb.sbuf("lane", DType::F32, p, &[cols, w])?;
            match &lane {
                _ if last_wins => kb.iota(&lt, iota(j0))?,
                None => kb.iota(
                    &lt,
                    AffineExpr {
                        base: j0 as i64,
                        partition: 0,
                        free: vec![0, 1],
                    },
                )?,
                Some(l) => kb.dma_copy(&lt, l.ap((first * lanes + j0) as u64, &lane_ap(w)))?,
            }
            let mask = kb.sbuf("mask", DType::F32, p, &[cols, w])?;
            // Last-wins scatters select the one lane pass 1 found; others every matching lane.
            let key_b = if last_wins { &hit } else { &kt }.ap(0..p, 0, &[(1, c), (0, w as u32)]);
            kb.tensor_tensor(&mask, &lt, AluOp::Eq, &key_b)?;
            let ct = kb.sbuf("cand", dtype, p, &[cols, w])?;
            kb.dma_copy(&ct, cand.ap((first * lanes + j0) as u64, &lane_ap(w)))?;
            let st = kb.sbuf("sel", dtype, p, &[cols, w])?;
            match (fill, &bt) {
                (Some(v), _) => {
                    let ft = kb.sbuf("fill", dtype, p, &[cols, w])?;
                    kb.memset(&ft, v)?;
                    kb.select(&st, &mask, &ct, &ft)?;
                    kb.free(ft)?;
                }
                (None, Some(b)) => {
                    let own = b.ap(0..p, 0, &[(1, c), (0, w as u32)]);
                    kb.select(&st, &mask, &ct, &own)?;
                }
                (None, None) => {
                    return Err(unsupported(NAME, "a scatter without a base".into()));
                }
            }
            let dst = if ci == 0 { &acc } else { &part };
            kb.tensor_reduce(dst, &st, reduce, 1)?;
            if ci > 0 {
                kb.tensor_tensor(&acc, &acc, combine, &part)?;
            }
            for t in [lt, mask, ct, st] {
                kb.free(t)?;
            }
        }
        let out = kb.sbuf("y", dtype, p, &[cols])?;
        match (mode, &bt) {
            (SelectMode::Gather, _) => kb.tensor_copy(&out, &acc)?,
            (SelectMode::Scatter(ScatterReduction::None), Some(b)) => {
                kb.tensor_scalar(&hit_part, &hit, AluOp::Ge, 0.0)?;
                kb.select(&out, &hit_part, &acc, b)?
            }
            (SelectMode::Scatter(ScatterReduction::Add), Some(b)) => {
                kb.tensor_tensor(&out, b, AluOp::Add, &acc)?
            }
            (SelectMode::Scatter(ScatterReduction::Mul), Some(b)) => {
                kb.tensor_tensor(&out, b, AluOp::Mul, &acc)?
            }
            // Max / min: when every lane is selected the base took part in no lane.
            (SelectMode::Scatter(_), Some(b)) => kb.tensor_tensor(&out, b, combine, &acc)?,
            (SelectMode::Scatter(_), None) => {
                return Err(unsupported(NAME, "a scatter without a base".into()));
            }
        }
        kb.dma_copy(y.ap(first as u64, &row_ap), &out)?;
        kb.free(out)?;
        for t in [acc, part, hit, hit_part, kt] {
            kb.free(t)?;
        }
        if let Some(t) = bt {
            kb.free(t)?;
        }
    }
    kb.finish()
}

/// `table`[vocab, dim] (a float dtype) and `key`[tokens] (f32) -> `y`[tokens, dim]: row `t` of
/// `y` is row `key[t]` of the table (zeros for a key matching no row), as a one-hot matrix
/// times the table on the tensor engine. For each block of 128 table rows the one-hot block
/// `onehot^T[v, t] = (v == key[t])` is built on chip (`iota` down the partitions compared with
/// the keys broadcast to every partition) and is the stationary operand; PSUM accumulates over
/// the blocks. Each output is `x * 1` plus products `y * 0`: exact when the table is finite
/// (`inf * 0` and `NaN * 0` are NaN), which the caller must guarantee; it is meant for
/// constant tables (embeddings) checked at compile time.
pub fn onehot_matmul(
    target: &TargetSpec,
    tokens: usize,
    vocab: usize,
    dim: usize,
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    const NAME: &str = "onehot_matmul";
    check_shape(NAME, "table", &[vocab, dim])?;
    check_shape(NAME, "key", &[tokens])?;
    if !dtype.is_float() || vocab > MAX_KEY {
        return Err(unsupported(
            NAME,
            format!("a {dtype} table of {vocab} rows (float, at most {MAX_KEY} rows)"),
        ));
    }
    let parts = target.partitions as usize;
    // PSUM accumulators of one row group: 512 fp32 per bank, at most half the banks.
    let bank = (target.psum_bank_bytes / 4) as usize;
    let group = bank * (target.psum_banks as usize / 2).max(1);
    let mut kb = KernelBuilder::new(NAME, target);
    let table = kb.input("table", dtype, &[vocab, dim])?;
    let key = kb.input("key", DType::F32, &[tokens])?;
    let y = kb.output("y", dtype, &[tokens, dim])?;
    let vblocks: Vec<_> = super::blocks(vocab, parts).collect();
    for tb in super::blocks(tokens, parts) {
        let m = tb.len() as u32;
        // Every partition holds all the block's keys.
        let keys = kb.sbuf("keys", DType::F32, target.partitions, &[tb.len()])?;
        kb.dma_copy(
            &keys,
            key.ap(tb.start as u64, &[(0, target.partitions), (1, m)]),
        )?;
        for dg in super::blocks(dim, group) {
            let accs: Vec<_> = super::blocks(dg.len(), bank)
                .map(|sb| kb.psum("acc", DType::F32, m, &[sb.len()]))
                .collect::<Result<_, _>>()?;
            for (vi, vb) in vblocks.iter().enumerate() {
                let kv = vb.len() as u32;
                let pos = kb.sbuf("pos", DType::F32, kv, &[tb.len()])?;
                kb.iota(
                    &pos,
                    AffineExpr {
                        base: vb.start as i64,
                        partition: 1,
                        free: vec![0],
                    },
                )?;
                let onehot = kb.sbuf("onehot", dtype, kv, &[tb.len()])?;
                kb.tensor_tensor(&onehot, &pos, AluOp::Eq, keys.part(0..kv))?;
                for (acc, sb) in accs.iter().zip(super::blocks(dg.len(), bank)) {
                    let cols = dg.start + sb.start..dg.start + sb.end;
                    let rows = kb.sbuf("rows", dtype, kv, &[sb.len()])?;
                    kb.dma_copy(&rows, table.block(vb.clone(), cols))?;
                    let last = vi + 1 == vblocks.len();
                    kb.nc_matmul(acc, &onehot, &rows, vi == 0, last)?;
                    kb.free(rows)?;
                }
                kb.free(pos)?;
                kb.free(onehot)?;
            }
            for (acc, sb) in accs.into_iter().zip(super::blocks(dg.len(), bank)) {
                let out = kb.sbuf("y", dtype, m, &[sb.len()])?;
                kb.tensor_copy(&out, &acc)?;
                let cols = dg.start + sb.start..dg.start + sb.end;
                kb.dma_copy(y.block(tb.clone(), cols), &out)?;
                kb.free(out)?;
                kb.free(acc)?;
            }
        }
        kb.free(keys)?;
    }
    kb.finish()
}

/// `x`[rows, cols] -> `values`[rows, k] (x's dtype) and `indices`[rows, k] (int64): the `k`
/// largest (or smallest) elements of each row in order, equal values by ascending index.
///
/// k rounds, each: the extreme of the elements still in play, the first in-play position that
/// holds it (a min-reduce over the positions of the matches), and that position taken out of
/// play. NaN counts as more extreme than any number in both directions (max and min propagate
/// it), matching the reference evaluator.
pub fn topk_rows(
    target: &TargetSpec,
    rows: usize,
    cols: usize,
    k: usize,
    largest: bool,
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    const NAME: &str = "topk_rows";
    check_shape(NAME, "x", &[rows, cols])?;
    if cols > TOPK_MAX_COLS || k == 0 || k > cols {
        return Err(unsupported(
            NAME,
            format!("k = {k} of rows of {cols} elements (1 <= k <= cols <= {TOPK_MAX_COLS})"),
        ));
    }
    let mut kb = KernelBuilder::new(NAME, target);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let values = kb.output("values", dtype, &[rows, k])?;
    let indices = kb.output("indices", DType::I64, &[rows, k])?;
    let (extreme, out_of_play) = if largest {
        (ReduceOp::Max, f64::NEG_INFINITY)
    } else {
        (ReduceOp::Min, f64::INFINITY)
    };
    for first in (0..rows).step_by(target.partitions as usize) {
        let n = (rows - first).min(target.partitions as usize);
        let p = n as u32;
        let xt = kb.sbuf("x", dtype, p, &[cols])?;
        kb.dma_copy(&xt, x.rows(first..first + n))?;
        let pos = kb.sbuf("pos", DType::F32, p, &[cols])?;
        kb.iota(
            &pos,
            AffineExpr {
                base: 0,
                partition: 0,
                free: vec![1],
            },
        )?;
        let alive = kb.sbuf("alive", DType::F32, p, &[cols])?;
        kb.memset(&alive, 1.0)?;
        let gone = kb.sbuf("gone", dtype, p, &[cols])?;
        kb.memset(&gone, out_of_play)?;
        let none = kb.sbuf("none", DType::F32, p, &[cols])?;
        kb.memset(&none, cols as f64)?;
        let vt = kb.sbuf("values", dtype, p, &[k])?;
        let it = kb.sbuf("indices", DType::F32, p, &[k])?;
        let play = kb.sbuf("play", dtype, p, &[cols])?;
        let eq = kb.sbuf("eq", DType::F32, p, &[cols])?;
        let nan = kb.sbuf("nan", DType::F32, p, &[cols])?;
        let cand = kb.sbuf("cand", DType::F32, p, &[cols])?;
        let m_nan = kb.sbuf("m_nan", DType::F32, p, &[1])?;
        for r in 0..k {
            let m = vt.col(0..p, r);
            let idx = it.col(0..p, r);
            kb.select(&play, &alive, &xt, &gone)?;
            kb.tensor_reduce(&m, &play, extreme, 1)?;
            // eq = alive & (play == m, or both NaN)
            kb.tensor_scalar(&eq, &play, AluOp::Eq, &m)?;
            kb.tensor_tensor(&nan, &play, AluOp::Ne, &play)?;
            kb.tensor_tensor(&m_nan, &m, AluOp::Ne, &m)?;
            kb.tensor_scalar(&nan, &nan, AluOp::Mul, &m_nan)?;
            kb.tensor_tensor(&eq, &eq, AluOp::Max, &nan)?;
            kb.tensor_tensor(&eq, &eq, AluOp::Mul, &alive)?;
            kb.select(&cand, &eq, &pos, &none)?;
            kb.tensor_reduce(&idx, &cand, ReduceOp::Min, 1)?;
            // Take the chosen position out of play.
            kb.tensor_scalar(&eq, &pos, AluOp::Eq, &idx)?;
            kb.tensor_tensor(&alive, &alive, AluOp::Sub, &eq)?;
        }
        kb.dma_copy(values.rows(first..first + n), &vt)?;
        let i64t = kb.sbuf("indices_i64", DType::I64, p, &[k])?;
        kb.tensor_copy(&i64t, &it)?;
        kb.dma_copy(indices.rows(first..first + n), &i64t)?;
        for t in [
            xt, pos, alive, gone, none, vt, it, play, eq, nan, cand, m_nan, i64t,
        ] {
            kb.free(t)?;
        }
    }
    kb.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_every_item_once() {
        for (n, parts, max) in [(1, 128, 8), (300, 128, 8), (1000, 128, 4), (7, 2, 3)] {
            let mut seen = vec![0; n];
            for (first, rows, cols) in pieces(n, parts, max) {
                assert!(rows <= parts && cols <= max.max(1));
                for s in &mut seen[first..first + rows * cols] {
                    *s += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{n} {parts} {max}");
        }
    }
}
