//! `reduce_rows`: one value per row of `x[rows, cols]` (sum, mean, max, min, product, L1, L2,
//! log-sum, log-sum-exp, sum of squares), rows on partitions, 128 rows per block, in f32.
//!
//! Each row is streamed in chunks of [`FREE_CHUNK`] columns: a chunk is transformed element-wise
//! where the reduction needs it (|x| on the activation engine, x*x on the vector engine),
//! reduced with `tensor_reduce`, and combined into a per-partition accumulator (add, max, min
//! or multiply). Log-sum-exp streams twice: the row max first, then `exp(x - max)` summed by
//! the activation engine's `accum`, so large inputs do not overflow. Reductions over other
//! axes are the caller's job: move them last (a DMA permute) and view the tensor as a matrix.

use super::{FREE_CHUNK, blocks, check_shape, parts};
use crate::{KernelBuilder, KernelError, Tile};
use tessera_ir::graph::ReduceKind;
use tessera_ir::{ActFunc, AluOp, DType, ReduceOp, TargetSpec, TileProgram};

/// `x`[rows, cols] -> `y`[rows, 1], `kind` over each row.
pub fn reduce_rows(
    target: &TargetSpec,
    rows: usize,
    cols: usize,
    kind: ReduceKind,
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    reduce_rows_chunked(target, rows, cols, kind, dtype, FREE_CHUNK)
}

/// [`reduce_rows`] with an explicit chunk (so tests can exercise the combining path on small
/// shapes).
pub fn reduce_rows_chunked(
    target: &TargetSpec,
    rows: usize,
    cols: usize,
    kind: ReduceKind,
    dtype: DType,
    chunk: usize,
) -> Result<TileProgram, KernelError> {
    check_shape("reduce_rows", "x", &[rows, cols])?;
    if matches!(kind, ReduceKind::ArgMax { .. } | ReduceKind::ArgMin { .. }) {
        return Err(KernelError::Unsupported {
            kernel: "reduce_rows",
            detail: "index reductions are arg_reduce_rows".into(),
        });
    }
    let chunk = chunk.clamp(1, cols);
    let mut kb = KernelBuilder::new("reduce_rows", target);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, 1])?;
    let (op, combine) = match kind {
        ReduceKind::Max => (ReduceOp::Max, AluOp::Max),
        ReduceKind::Min => (ReduceOp::Min, AluOp::Min),
        ReduceKind::Prod => (ReduceOp::Prod, AluOp::Mul),
        _ => (ReduceOp::Sum, AluOp::Add),
    };
    for rb in blocks(rows, target.partitions as usize) {
        let p = parts(&rb);
        let cv = |t: &Tile, w: usize| t.cols(0..p, 0..w);
        let xt = kb.sbuf("x", DType::F32, p, &[chunk])?;
        let tt = kb.sbuf("t", DType::F32, p, &[chunk])?;
        let acc = kb.sbuf("acc", DType::F32, p, &[1])?;
        let part = kb.sbuf("part", DType::F32, p, &[1])?;
        let max = kb.sbuf("max", DType::F32, p, &[1])?;
        let neg_max = kb.sbuf("neg_max", DType::F32, p, &[1])?;
        if kind == ReduceKind::LogSumExp {
            for (i, cb) in blocks(cols, chunk).enumerate() {
                let w = cb.len();
                kb.dma_copy(cv(&xt, w), x.block(rb.clone(), cb))?;
                let dst = if i == 0 { &max } else { &part };
                kb.tensor_reduce(dst, cv(&xt, w), ReduceOp::Max, 1)?;
                if i > 0 {
                    kb.tensor_tensor(&max, &max, AluOp::Max, &part)?;
                }
            }
            kb.tensor_scalar(&neg_max, &max, AluOp::Mul, -1.0)?;
        }
        for (i, cb) in blocks(cols, chunk).enumerate() {
            let w = cb.len();
            kb.dma_copy(cv(&xt, w), x.block(rb.clone(), cb))?;
            let dst = if i == 0 { &acc } else { &part };
            match kind {
                ReduceKind::LogSumExp => {
                    kb.activation(
                        cv(&tt, w),
                        cv(&xt, w),
                        ActFunc::Exp,
                        1.0,
                        &neg_max,
                        Some(&dst.all()),
                    )?;
                }
                ReduceKind::L1 => {
                    kb.act(cv(&tt, w), cv(&xt, w), ActFunc::Abs)?;
                    kb.tensor_reduce(dst, cv(&tt, w), op, 1)?;
                }
                ReduceKind::L2 | ReduceKind::SumSquare => {
                    kb.tensor_tensor(cv(&tt, w), cv(&xt, w), AluOp::Mul, cv(&xt, w))?;
                    kb.tensor_reduce(dst, cv(&tt, w), op, 1)?;
                }
                _ => kb.tensor_reduce(dst, cv(&xt, w), op, 1)?,
            }
            if i > 0 {
                kb.tensor_tensor(&acc, &acc, combine, &part)?;
            }
        }
        match kind {
            ReduceKind::Mean => kb.tensor_scalar(&acc, &acc, AluOp::Mul, 1.0 / cols as f64)?,
            ReduceKind::L2 => kb.act(&acc, &acc, ActFunc::Sqrt)?,
            ReduceKind::LogSum => kb.act(&acc, &acc, ActFunc::Log)?,
            ReduceKind::LogSumExp => {
                kb.act(&acc, &acc, ActFunc::Log)?;
                kb.tensor_tensor(&acc, &acc, AluOp::Add, &max)?;
            }
            _ => {}
        }
        let yt = kb.sbuf("y", dtype, p, &[1])?;
        kb.tensor_copy(&yt, &acc)?;
        kb.dma_copy(y.rows(rb.clone()), &yt)?;
        for t in [xt, tt, acc, part, max, neg_max, yt] {
            kb.free(t)?;
        }
    }
    kb.finish()
}
