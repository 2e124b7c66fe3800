//! Execution of one instruction: resolve and check the operands, read them, compute with the
//! scalar definitions of [`super::semantics`], and store.
//!
//! This is the one implementation of every instruction, for both program levels. It sees memory
//! only through [`Store`]: the tile level's per-buffer regions ([`Memory`]) and the machine
//! level's physical SBUF/PSUM/HBM (`machine::memory`) resolve operands to the same checked
//! [`View`]s and differ only in where the bytes live.
//!
//! Each instruction reads all its inputs before writing, so an instruction whose destination
//! overlaps a source sees the old values. Moves (DMA, `tensor_copy`, `nc_transpose`,
//! `select`, `affine_select`) do no arithmetic: with equal dtypes they copy bytes exactly,
//! otherwise each value is converted once by the store.

use super::error::{Ctx, InterpError};
use super::exact::{Need, alu_need, check_operand, check_results, is_wide_int, reduce_need};
use super::memory::{Memory, View};
use super::semantics::{activation, alu, float_math, is_true, reduce, reduce_identity, round_step};
use tessera_ir::HbmAccess;
use tessera_ir::{
    ActFunc, AffineExpr, AluOp, CmpOp, DType, DmaOperand, Inst, Op, ReduceOp, Scalar, ScalarStep,
    TileAccess,
};

/// Memory as instructions see it: operands resolve to checked [`View`]s, which are then read
/// (poison-checked) and written (marking the bytes initialised).
pub(crate) trait Store {
    /// Resolves and checks a tile operand.
    fn tile_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        t: &TileAccess,
    ) -> Result<View, InterpError>;
    /// Resolves and checks an HBM operand of a DMA.
    fn hbm_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        h: &HbmAccess,
    ) -> Result<View, InterpError>;
    /// Decodes every element of the view, in element order. The default decodes
    /// [`Store::read_bytes`]; a store with a faster path may override it.
    fn read(&self, ctx: Ctx<'_>, view: &View) -> Result<Vec<f64>, InterpError> {
        let bytes = self.read_bytes(ctx, view)?;
        let w = view.dtype.size_bytes();
        Ok(bytes
            .chunks_exact(w)
            .map(|b| view.dtype.decode(b))
            .collect())
    }
    /// The encoded bytes of every element of the view, in element order.
    fn read_bytes(&self, ctx: Ctx<'_>, view: &View) -> Result<Vec<u8>, InterpError>;
    /// Stores `values` through the view, rounding to its dtype. The default encodes and calls
    /// [`Store::write_bytes`]; a store with a faster path may override it.
    fn write(&mut self, ctx: Ctx<'_>, view: &View, values: &[f64]) -> Result<(), InterpError> {
        super::memory::check_len(ctx, view, values.len())?;
        let w = view.dtype.size_bytes();
        let mut bytes = vec![0u8; values.len() * w];
        for (&v, slot) in values.iter().zip(bytes.chunks_exact_mut(w)) {
            view.dtype.encode(v, slot);
        }
        self.write_bytes(ctx, view, &bytes)
    }
    /// Stores already-encoded elements of the view's dtype.
    fn write_bytes(&mut self, ctx: Ctx<'_>, view: &View, bytes: &[u8]) -> Result<(), InterpError>;
}

impl Store for Memory<'_> {
    fn tile_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        t: &TileAccess,
    ) -> Result<View, InterpError> {
        Memory::tile_view(self, ctx, role, t)
    }
    fn hbm_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        h: &HbmAccess,
    ) -> Result<View, InterpError> {
        Memory::hbm_view(self, ctx, role, h)
    }
    fn read(&self, ctx: Ctx<'_>, view: &View) -> Result<Vec<f64>, InterpError> {
        Memory::read(self, ctx, view)
    }
    fn read_bytes(&self, ctx: Ctx<'_>, view: &View) -> Result<Vec<u8>, InterpError> {
        Memory::read_bytes(self, ctx, view)
    }
    fn write(&mut self, ctx: Ctx<'_>, view: &View, values: &[f64]) -> Result<(), InterpError> {
        Memory::write(self, ctx, view, values)
    }
    fn write_bytes(&mut self, ctx: Ctx<'_>, view: &View, bytes: &[u8]) -> Result<(), InterpError> {
        Memory::write_bytes(self, ctx, view, bytes)
    }
}

/// Executes instruction `index` of a tile program against `mem`.
pub(crate) fn step(mem: &mut Memory<'_>, index: usize, inst: &Inst) -> Result<(), InterpError> {
    let ctx = Ctx {
        index,
        opcode: inst.op.opcode(),
        loc: inst.loc.as_ref(),
        machine: None,
    };
    match &inst.op {
        Op::Alloc { buf } => mem.alloc(ctx, buf.0),
        Op::Free { buf } => mem.free(ctx, buf.0),
        op => execute(mem, ctx, op),
    }
}

/// Executes one engine instruction against any [`Store`]. `alloc`/`free` are bookkeeping of the
/// tile level's virtual buffers and are refused here; [`step`] handles them.
pub(crate) fn execute<S: Store>(mem: &mut S, ctx: Ctx<'_>, op: &Op) -> Result<(), InterpError> {
    match op {
        Op::Alloc { .. } | Op::Free { .. } => Err(ctx.bad(
            "alloc/free only exist in tile programs (machine buffers are placed for the whole program)"
                .to_string(),
        )),
        Op::DmaCopy { dst, src } => dma_copy(mem, ctx, dst, src),
        Op::Matmul {
            dst,
            stationary,
            moving,
            start,
            ..
        } => matmul(mem, ctx, dst, stationary, moving, *start),
        Op::Transpose { dst, src } => transpose(mem, ctx, dst, src),
        Op::Activation {
            dst,
            src,
            func,
            scale,
            bias,
            accum,
        } => activate(mem, ctx, dst, src, *func, scale, bias, accum.as_ref()),
        Op::TensorTensor {
            op, dst, lhs, rhs, ..
        } => tensor_tensor(mem, ctx, *op, dst, lhs, rhs),
        Op::TensorScalar {
            dst, src, op0, op1, ..
        } => tensor_scalar(mem, ctx, dst, src, op0, op1.as_ref()),
        Op::TensorReduce {
            op, dst, src, axes, ..
        } => tensor_reduce(mem, ctx, *op, dst, src, *axes),
        Op::TensorCopy { dst, src, .. } => {
            let s = mem.tile_view(ctx, "src", src)?;
            let d = mem.tile_view(ctx, "dst", dst)?;
            same_shape(ctx, &s, &d)?;
            copy_converting(mem, ctx, &s, &d)
        }
        Op::Memset { dst, value, .. } => {
            let d = mem.tile_view(ctx, "dst", dst)?;
            mem.write(ctx, &d, &vec![*value; d.len()])
        }
        Op::Iota { dst, expr, .. } => iota(mem, ctx, dst, expr),
        Op::AffineSelect {
            dst,
            src,
            expr,
            cmp,
            fill,
            ..
        } => affine_select(mem, ctx, dst, src, expr, *cmp, *fill),
        Op::Select {
            dst,
            pred,
            on_true,
            on_false,
            ..
        } => select(mem, ctx, dst, pred, on_true, on_false),
    }
}

/// Element-wise operands must have the same partition count and free element count.
fn same_shape(ctx: Ctx<'_>, a: &View, dst: &View) -> Result<(), InterpError> {
    if a.rows == dst.rows && a.free() == dst.free() {
        Ok(())
    } else {
        Err(ctx.shape_mismatch(format!(
            "`{}` is {} but `{}` is {}",
            a.role,
            a.shape(),
            dst.role,
            dst.shape()
        )))
    }
}

/// Re-encodes elements from one dtype to another (a no-op when they are equal).
fn convert(from: DType, to: DType, bytes: Vec<u8>) -> Vec<u8> {
    if from == to {
        return bytes;
    }
    let (wf, wt) = (from.size_bytes(), to.size_bytes());
    let mut out = vec![0; bytes.len() / wf * wt];
    for (s, d) in bytes.chunks_exact(wf).zip(out.chunks_exact_mut(wt)) {
        to.encode(from.decode(s), d);
    }
    out
}

fn copy_converting<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    s: &View,
    d: &View,
) -> Result<(), InterpError> {
    let bytes = mem.read_bytes(ctx, s)?;
    mem.write_bytes(ctx, d, &convert(s.dtype, d.dtype, bytes))
}

fn dma_view<S: Store>(
    mem: &S,
    ctx: Ctx<'_>,
    role: &'static str,
    op: &DmaOperand,
) -> Result<View, InterpError> {
    match op {
        DmaOperand::Hbm(h) => mem.hbm_view(ctx, role, h),
        DmaOperand::Tile(t) => mem.tile_view(ctx, role, t),
    }
}

fn dma_copy<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    dst: &DmaOperand,
    src: &DmaOperand,
) -> Result<(), InterpError> {
    let s = dma_view(mem, ctx, "src", src)?;
    let d = dma_view(mem, ctx, "dst", dst)?;
    // A DMA pairs elements in element order; only the totals need to agree.
    if s.len() != d.len() {
        return Err(ctx.shape_mismatch(format!(
            "`src` has {} elements but `dst` has {}",
            s.len(),
            d.len()
        )));
    }
    copy_converting(mem, ctx, &s, &d)
}

fn matmul<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    dst: &TileAccess,
    stationary: &TileAccess,
    moving: &TileAccess,
    start: bool,
) -> Result<(), InterpError> {
    let st = mem.tile_view(ctx, "stationary", stationary)?;
    let mv = mem.tile_view(ctx, "moving", moving)?;
    let d = mem.tile_view(ctx, "dst", dst)?;
    let (k, m, n) = (st.rows, st.free(), mv.free());
    if mv.rows != k {
        return Err(ctx.shape_mismatch(format!(
            "`moving` has {} partitions but `stationary` has {k} (both are the contraction K)",
            mv.rows
        )));
    }
    if d.rows != m || d.free() != n {
        return Err(ctx.shape_mismatch(format!(
            "`dst` is {} but stationary[K={k}, M={m}]^T . moving[K={k}, N={n}] is {m} partitions x {n} elements",
            d.shape()
        )));
    }
    let float = float_math(&[st.dtype, mv.dtype, d.dtype]);
    let s = mem.read(ctx, &st)?;
    let b = mem.read(ctx, &mv)?;
    let prev = if start {
        None
    } else {
        Some(mem.read(ctx, &d)?)
    };
    let mut out = vec![0.0; m * n];
    if n > 0 && m > 0 {
        // Row m of the result is sum_k stationary[k, m] * moving[k, :]: an axpy over contiguous
        // rows of `moving`, summing k in ascending order in f64 (vectorises; one rounding at the
        // end as the PE's fp32 accumulator of a whole dot product).
        let mut acc = vec![0.0f64; n];
        for (mi, out_row) in out.chunks_exact_mut(n).enumerate() {
            acc.fill(0.0);
            let column = s.iter().skip(mi).step_by(m);
            for (&a, row) in column.zip(b.chunks_exact(n)) {
                for (c, &x) in acc.iter_mut().zip(row) {
                    *c += a * x;
                }
            }
            for (o, &c) in out_row.iter_mut().zip(&acc) {
                *o = round_step(float, c);
            }
        }
    }
    if let Some(prev) = prev {
        for (o, &p) in out.iter_mut().zip(&prev) {
            *o = round_step(float, p + *o);
        }
    }
    mem.write(ctx, &d, &out)
}

fn transpose<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    dst: &TileAccess,
    src: &TileAccess,
) -> Result<(), InterpError> {
    let s = mem.tile_view(ctx, "src", src)?;
    let d = mem.tile_view(ctx, "dst", dst)?;
    let (p, f) = (s.rows, s.free());
    if d.rows != f || d.free() != p {
        return Err(ctx.shape_mismatch(format!(
            "`src` is {} so `dst` must be {f} partitions x {p} elements, but it is {}",
            s.shape(),
            d.shape()
        )));
    }
    let w = s.dtype.size_bytes();
    let bytes = mem.read_bytes(ctx, &s)?;
    let mut moved = vec![0u8; bytes.len()];
    // src element (pi, fi) sits at pi * f + fi; it goes to dst element (fi, pi) at fi * p + pi.
    for (i, elem) in bytes.chunks_exact(w).enumerate() {
        let (pi, fi) = (i / f.max(1), i % f.max(1));
        let j = (fi * p + pi) * w;
        if let Some(slot) = moved.get_mut(j..j + w) {
            slot.copy_from_slice(elem);
        }
    }
    mem.write_bytes(ctx, &d, &convert(s.dtype, d.dtype, moved))
}

/// A resolved scalar operand: an immediate, or the view of a per-partition scalar tile.
enum ScalarOperand {
    Imm(f64),
    Tile(View),
}

impl ScalarOperand {
    fn resolve<S: Store>(
        mem: &S,
        ctx: Ctx<'_>,
        role: &'static str,
        s: &Scalar,
    ) -> Result<Self, InterpError> {
        match s {
            Scalar::Imm(v) => Ok(ScalarOperand::Imm(*v)),
            Scalar::PerPartition(t) => Ok(ScalarOperand::Tile(mem.tile_view(ctx, role, t)?)),
        }
    }

    fn dtype(&self) -> Option<DType> {
        match self {
            ScalarOperand::Imm(_) => None,
            ScalarOperand::Tile(v) => Some(v.dtype),
        }
    }

    /// One value per partition of an operand with `rows` partitions. An immediate of a float
    /// instruction is an fp32 constant, as the engines hold it, so a backend computing in fp32
    /// gets the same results.
    fn values<S: Store>(
        &self,
        mem: &S,
        ctx: Ctx<'_>,
        rows: usize,
        float: bool,
    ) -> Result<Vec<f64>, InterpError> {
        match self {
            ScalarOperand::Imm(v) => Ok(vec![round_step(float, *v); rows]),
            ScalarOperand::Tile(view) => {
                if view.rows != rows || view.free() == 0 {
                    return Err(ctx.shape_mismatch(format!(
                        "per-partition scalar `{}` is {} but must be {rows} partitions x at least 1 element",
                        view.role,
                        view.shape()
                    )));
                }
                // Element 0 of each partition's view.
                let mut first = view.clone();
                first.offsets.truncate(1);
                mem.read(ctx, &first)
            }
        }
    }

    /// The elements a per-partition operand reads (element 0 of each partition), if any.
    fn used_view(&self) -> Option<View> {
        match self {
            ScalarOperand::Imm(_) => None,
            ScalarOperand::Tile(view) => {
                let mut first = view.clone();
                first.offsets.truncate(1);
                Some(first)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn activate<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    dst: &TileAccess,
    src: &TileAccess,
    func: ActFunc,
    scale: &Scalar,
    bias: &Scalar,
    accum: Option<&TileAccess>,
) -> Result<(), InterpError> {
    let s = mem.tile_view(ctx, "src", src)?;
    let sc = ScalarOperand::resolve(mem, ctx, "scale", scale)?;
    let bi = ScalarOperand::resolve(mem, ctx, "bias", bias)?;
    let d = mem.tile_view(ctx, "dst", dst)?;
    let acc = accum.map(|a| mem.tile_view(ctx, "accum", a)).transpose()?;
    same_shape(ctx, &s, &d)?;
    if let Some(a) = &acc
        && (a.rows != s.rows || a.free() != 1)
    {
        return Err(ctx.shape_mismatch(format!(
            "`accum` is {} but must be {} partitions x 1 element",
            a.shape(),
            s.rows
        )));
    }
    let mut dtypes = vec![s.dtype, d.dtype];
    dtypes.extend(sc.dtype());
    dtypes.extend(bi.dtype());
    dtypes.extend(acc.as_ref().map(|a| a.dtype));
    let float = float_math(&dtypes);
    let wide = !float && dtypes.iter().copied().any(is_wide_int);
    if wide {
        check_operand(mem, ctx, &s, Need::InRange)?;
        for operand in [&sc, &bi] {
            if let Some(v) = operand.used_view() {
                check_operand(mem, ctx, &v, Need::InRange)?;
            }
        }
    }
    let x = mem.read(ctx, &s)?;
    let scales = sc.values(mem, ctx, s.rows, float)?;
    let biases = bi.values(mem, ctx, s.rows, float)?;
    let mut out = Vec::with_capacity(x.len());
    let mut sums = Vec::with_capacity(s.rows);
    let free = s.free();
    if free == 0 {
        sums.resize(s.rows, 0.0);
    } else {
        for ((row, &scale), &bias) in x.chunks_exact(free).zip(&scales).zip(&biases) {
            let mut sum = 0.0;
            for &v in row {
                let y = round_step(float, activation(func, v * scale + bias));
                sum += y;
                out.push(y);
            }
            sums.push(round_step(float, sum));
        }
    }
    if wide {
        check_results(ctx, "dst", &out)?;
        if acc.is_some() {
            check_results(ctx, "accum", &sums)?;
        }
    }
    mem.write(ctx, &d, &out)?;
    if let Some(a) = &acc {
        mem.write(ctx, a, &sums)?;
    }
    Ok(())
}

fn tensor_tensor<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    op: AluOp,
    dst: &TileAccess,
    lhs: &TileAccess,
    rhs: &TileAccess,
) -> Result<(), InterpError> {
    let a = mem.tile_view(ctx, "lhs", lhs)?;
    let b = mem.tile_view(ctx, "rhs", rhs)?;
    let d = mem.tile_view(ctx, "dst", dst)?;
    same_shape(ctx, &a, &d)?;
    same_shape(ctx, &b, &d)?;
    let float = float_math(&[a.dtype, b.dtype, d.dtype]);
    let wide = !float && [a.dtype, b.dtype, d.dtype].into_iter().any(is_wide_int);
    if wide {
        check_operand(mem, ctx, &a, alu_need(op))?;
        check_operand(mem, ctx, &b, alu_need(op))?;
    }
    let x = mem.read(ctx, &a)?;
    let y = mem.read(ctx, &b)?;
    let out: Vec<f64> = x
        .iter()
        .zip(&y)
        .map(|(&x, &y)| round_step(float, alu(op, x, y)))
        .collect();
    if wide && alu_need(op) == Need::InRange {
        check_results(ctx, "dst", &out)?;
    }
    mem.write(ctx, &d, &out)
}

fn tensor_scalar<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    dst: &TileAccess,
    src: &TileAccess,
    op0: &ScalarStep,
    op1: Option<&ScalarStep>,
) -> Result<(), InterpError> {
    let s = mem.tile_view(ctx, "src", src)?;
    let s0 = ScalarOperand::resolve(mem, ctx, "operand0", &op0.operand)?;
    let s1 = op1
        .map(|st| ScalarOperand::resolve(mem, ctx, "operand1", &st.operand))
        .transpose()?;
    let d = mem.tile_view(ctx, "dst", dst)?;
    same_shape(ctx, &s, &d)?;
    let mut dtypes = vec![s.dtype, d.dtype];
    dtypes.extend(s0.dtype());
    dtypes.extend(s1.as_ref().and_then(ScalarOperand::dtype));
    let float = float_math(&dtypes);
    let wide = !float && dtypes.iter().copied().any(is_wide_int);
    if wide {
        check_operand(mem, ctx, &s, alu_need(op0.op))?;
        let first = std::iter::once((op0, &s0));
        for (step, operand) in first.chain(op1.zip(s1.as_ref())) {
            if let Some(v) = operand.used_view() {
                check_operand(mem, ctx, &v, alu_need(step.op))?;
            }
        }
    }
    let mut x = mem.read(ctx, &s)?;
    let steps = std::iter::once((op0, s0)).chain(op1.zip(s1));
    let free = s.free();
    for (i, (step, operand)) in steps.enumerate() {
        let in_range = wide && alu_need(step.op) == Need::InRange;
        if in_range && i > 0 {
            // The first step's results are the second's operands.
            check_results(ctx, "dst", &x)?;
        }
        let per_row = operand.values(mem, ctx, s.rows, float)?;
        if free == 0 {
            continue;
        }
        for (row, &c) in x.chunks_exact_mut(free).zip(&per_row) {
            for v in row {
                let r = if step.reverse {
                    alu(step.op, c, *v)
                } else {
                    alu(step.op, *v, c)
                };
                *v = round_step(float, r);
            }
        }
        if in_range {
            check_results(ctx, "dst", &x)?;
        }
    }
    mem.write(ctx, &d, &x)
}

fn tensor_reduce<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    op: ReduceOp,
    dst: &TileAccess,
    src: &TileAccess,
    axes: u8,
) -> Result<(), InterpError> {
    let s = mem.tile_view(ctx, "src", src)?;
    let d = mem.tile_view(ctx, "dst", dst)?;
    let nd = src.dims.len();
    let axes = axes as usize;
    if axes == 0 || axes > nd {
        return Err(ctx.bad(format!(
            "`axes` is {axes} but `src` has {nd} free dimensions (reduce 1..={nd} trailing ones)"
        )));
    }
    let (kept, reduced) = src.dims.split_at(nd - axes);
    let inner = reduced
        .iter()
        .fold(1usize, |acc, d| acc.saturating_mul(d.size as usize));
    let outer = kept
        .iter()
        .fold(1u64, |acc, d| acc.saturating_mul(d.size as u64));
    if d.rows != s.rows || d.free() as u64 != outer {
        return Err(ctx.shape_mismatch(format!(
            "`dst` is {} but reducing {axes} trailing dimensions of `src` ({}) leaves {} partitions x {outer} elements",
            d.shape(),
            s.shape(),
            s.rows
        )));
    }
    let float = float_math(&[s.dtype, d.dtype]);
    let wide = !float && (is_wide_int(s.dtype) || is_wide_int(d.dtype));
    if wide {
        check_operand(mem, ctx, &s, reduce_need(op))?;
    }
    let x = mem.read(ctx, &s)?;
    // `x` is partitions x kept x reduced in row-major order, so each reduction is one chunk.
    let out: Vec<f64> = if inner == 0 {
        vec![round_step(float, reduce_identity(op)); d.len()]
    } else {
        x.chunks_exact(inner)
            .map(|c| round_step(float, reduce(op, c)))
            .collect()
    };
    if wide && reduce_need(op) == Need::InRange {
        check_results(ctx, "dst", &out)?;
    }
    mem.write(ctx, &d, &out)
}

/// The values of `expr` minus its partition term, over the free indices of `dst` in element
/// order; i128 so no coefficient can overflow.
fn affine_free_values(
    ctx: Ctx<'_>,
    dst: &TileAccess,
    expr: &AffineExpr,
) -> Result<Vec<i128>, InterpError> {
    if expr.free.len() > dst.dims.len() {
        return Err(ctx.bad(format!(
            "the affine expression has {} free coefficients but `dst` has {} free dimensions",
            expr.free.len(),
            dst.dims.len()
        )));
    }
    if dst.dims.iter().any(|d| d.size == 0) {
        // An empty view; skip the expansion, which could otherwise grow before reaching the
        // zero-sized dimension.
        return Ok(Vec::new());
    }
    let mut vals = vec![expr.base as i128];
    for (k, dim) in dst.dims.iter().enumerate() {
        // Missing trailing coefficients are 0, as `AffineExpr::eval` reads them.
        let c = expr.free.get(k).copied().unwrap_or(0) as i128;
        let mut next = Vec::with_capacity(vals.len() * dim.size as usize);
        for &v in &vals {
            next.extend((0..dim.size as i128).map(|i| v + c * i));
        }
        vals = next;
    }
    Ok(vals)
}

fn iota<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    dst: &TileAccess,
    expr: &AffineExpr,
) -> Result<(), InterpError> {
    let d = mem.tile_view(ctx, "dst", dst)?;
    let free = affine_free_values(ctx, dst, expr)?;
    let mut out = Vec::with_capacity(d.len());
    for p in 0..d.rows as i128 {
        let pt = expr.partition as i128 * p;
        out.extend(free.iter().map(|&v| (v + pt) as f64));
    }
    mem.write(ctx, &d, &out)
}

fn holds(cmp: CmpOp, v: i128) -> bool {
    match cmp {
        CmpOp::Eq => v == 0,
        CmpOp::Ne => v != 0,
        CmpOp::Lt => v < 0,
        CmpOp::Le => v <= 0,
        CmpOp::Gt => v > 0,
        CmpOp::Ge => v >= 0,
    }
}

fn affine_select<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    dst: &TileAccess,
    src: &TileAccess,
    expr: &AffineExpr,
    cmp: CmpOp,
    fill: f64,
) -> Result<(), InterpError> {
    let s = mem.tile_view(ctx, "src", src)?;
    let d = mem.tile_view(ctx, "dst", dst)?;
    same_shape(ctx, &s, &d)?;
    let free = affine_free_values(ctx, dst, expr)?;
    let x = mem.read(ctx, &s)?;
    let mut out = Vec::with_capacity(x.len());
    if !free.is_empty() {
        for (p, row) in x.chunks_exact(free.len()).enumerate() {
            let pt = expr.partition as i128 * p as i128;
            out.extend(
                row.iter()
                    .zip(&free)
                    .map(|(&v, &f)| if holds(cmp, f + pt) { v } else { fill }),
            );
        }
    }
    mem.write(ctx, &d, &out)
}

fn select<S: Store>(
    mem: &mut S,
    ctx: Ctx<'_>,
    dst: &TileAccess,
    pred: &TileAccess,
    on_true: &TileAccess,
    on_false: &TileAccess,
) -> Result<(), InterpError> {
    let p = mem.tile_view(ctx, "pred", pred)?;
    let t = mem.tile_view(ctx, "on_true", on_true)?;
    let f = mem.tile_view(ctx, "on_false", on_false)?;
    let d = mem.tile_view(ctx, "dst", dst)?;
    for v in [&p, &t, &f] {
        same_shape(ctx, v, &d)?;
    }
    let pv = mem.read(ctx, &p)?;
    let tv = mem.read(ctx, &t)?;
    let fv = mem.read(ctx, &f)?;
    let out: Vec<f64> = pv
        .iter()
        .zip(tv.iter().zip(&fv))
        .map(|(&c, (&a, &b))| if is_true(c) { a } else { b })
        .collect();
    mem.write(ctx, &d, &out)
}
