//! `softmax` over the last axis: rows on partitions, 128 rows per block, computed in f32.
//!
//! A row that fits (`cols <= chunk`) stays in SBUF: row max (`tensor_reduce`), `exp(x - max)` on
//! the activation engine with the bias `-max` and `accum` giving the row sum, its reciprocal,
//! and a multiply by that per-partition scalar. A longer row is streamed in chunks twice: the
//! first pass keeps an online max and a sum rescaled by `exp(old_max - new_max)` whenever the max
//! grows, the second recomputes `exp(x - max)` and scales it. So there is no length limit; long
//! rows cost one extra read of `x`.

use super::{DeferredStores, blocks, check_shape, dma_groups, parts, rows_cols};
use crate::{KernelBuilder, KernelError, Step};
use std::ops::Range;
use tessera_ir::{ActFunc, AluOp, DType, Engine, ReduceOp, TargetSpec, TileProgram};

/// Rows up to this many columns are processed from SBUF in one pass: x and exp(x) in f32 plus
/// the output tile take at most 96 KiB per partition, half of trn1's SBUF.
pub const RESIDENT_COLS: usize = 8192;

/// `x`[shape] -> `y`[shape], softmax over the last axis.
pub fn softmax(
    target: &TargetSpec,
    shape: &[usize],
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    softmax_chunked(target, shape, dtype, RESIDENT_COLS)
}

/// [`softmax`] with an explicit chunk: rows of at most `chunk` columns are kept in SBUF, longer
/// rows are streamed `chunk` columns at a time (exposed so tests can exercise the streaming path
/// on small shapes).
pub fn softmax_chunked(
    target: &TargetSpec,
    shape: &[usize],
    dtype: DType,
    chunk: usize,
) -> Result<TileProgram, KernelError> {
    check_shape("softmax", "x", shape)?;
    let chunk = chunk.max(1);
    let (rows, cols) = rows_cols(shape);
    let mut kb = KernelBuilder::new("softmax", target);
    let x = kb.input("x", dtype, shape)?;
    let y = kb.output("y", dtype, shape)?;
    let mut stores = DeferredStores::new(cols.min(chunk) * dtype.size_bytes());
    for (blk, rb) in blocks(rows, target.partitions as usize).enumerate() {
        let p = parts(&rb);
        let col = |kb: &mut KernelBuilder<'_>, name| kb.sbuf(name, DType::F32, p, &[1]);
        if cols <= chunk {
            // Fresh tiles per block and stores deferred (`DeferredStores`), loads and stores
            // split over several DMA queues (`dma_groups`), so consecutive blocks overlap.
            let groups = dma_groups(p, cols * dtype.size_bytes());
            let rows_of = |g: &Range<u32>| rb.start + g.start as usize..rb.start + g.end as usize;
            let xt = kb.sbuf("x", DType::F32, p, &[cols])?;
            for g in &groups {
                kb.dma_copy(xt.part(g.clone()), x.rows(rows_of(g)))?;
            }
            let max = col(&mut kb, "max")?;
            kb.tensor_reduce(&max, &xt, ReduceOp::Max, 1)?;
            let neg_max = col(&mut kb, "neg_max")?;
            kb.tensor_scalar(&neg_max, &max, AluOp::Mul, -1.0)?;
            let e = kb.sbuf("exp", DType::F32, p, &[cols])?;
            let sum = col(&mut kb, "sum")?;
            kb.activation(&e, &xt, ActFunc::Exp, 1.0, &neg_max, Some(&sum.all()))?;
            kb.free(xt)?;
            let recip = col(&mut kb, "recip")?;
            kb.act(&recip, &sum, ActFunc::Reciprocal)?;
            // The row max and the scaling both stream the row on DVE, which would make it the
            // busiest engine; every other block scales on POOL instead.
            let engine = if blk % 2 == 0 {
                Engine::Dve
            } else {
                Engine::Pool
            };
            let yt = kb.sbuf("y", dtype, p, &[cols])?;
            kb.tensor_scalar_on(engine, &yt, &e, Step::new(AluOp::Mul, &recip), None)?;
            for t in [max, neg_max, e, sum, recip] {
                kb.free(t)?;
            }
            let dsts = groups
                .iter()
                .map(|g| (g.clone(), y.rows(rows_of(g))))
                .collect();
            stores.push(&mut kb, yt, dsts)?;
            continue;
        }

        let max = col(&mut kb, "max")?;
        let neg_max = col(&mut kb, "neg_max")?;
        let sum = col(&mut kb, "sum")?;
        let chunk_max = col(&mut kb, "chunk_max")?;
        let chunk_sum = col(&mut kb, "chunk_sum")?;
        let rescale = col(&mut kb, "rescale")?;
        // As in the resident path: fresh chunk tiles, loads and stores split over DMA queues,
        // stores deferred, so chunks (and blocks) overlap instead of queueing on one tile.
        let groups = dma_groups(p, chunk.min(cols) * dtype.size_bytes());
        let rows_of = |g: &Range<u32>| rb.start + g.start as usize..rb.start + g.end as usize;
        let load = |kb: &mut KernelBuilder<'_>, cb: &Range<usize>| {
            let xt = kb.sbuf("x", DType::F32, p, &[cb.len()])?;
            for g in &groups {
                kb.dma_copy(xt.part(g.clone()), x.block(rows_of(g), cb.clone()))?;
            }
            Ok::<_, KernelError>(xt)
        };
        // Pass 1: online max and rescaled sum.
        for (i, cb) in blocks(cols, chunk).enumerate() {
            let w = cb.len();
            let xt = load(&mut kb, &cb)?;
            let e = kb.sbuf("exp", DType::F32, p, &[w])?;
            if i == 0 {
                kb.tensor_reduce(&max, &xt, ReduceOp::Max, 1)?;
                kb.tensor_scalar(&neg_max, &max, AluOp::Mul, -1.0)?;
                kb.activation(&e, &xt, ActFunc::Exp, 1.0, &neg_max, Some(&sum.all()))?;
            } else {
                kb.tensor_reduce(&chunk_max, &xt, ReduceOp::Max, 1)?;
                kb.tensor_tensor(&chunk_max, &chunk_max, AluOp::Max, &max)?;
                kb.tensor_scalar(&neg_max, &chunk_max, AluOp::Mul, -1.0)?;
                // sum *= exp(old_max - new_max): the terms summed so far, rebased to the new max.
                kb.activation(&rescale, &max, ActFunc::Exp, 1.0, &neg_max, None)?;
                kb.tensor_tensor(&sum, &sum, AluOp::Mul, &rescale)?;
                kb.activation(&e, &xt, ActFunc::Exp, 1.0, &neg_max, Some(&chunk_sum.all()))?;
                kb.tensor_tensor(&sum, &sum, AluOp::Add, &chunk_sum)?;
                kb.tensor_copy(&max, &chunk_max)?;
            }
            kb.free(xt)?;
            kb.free(e)?;
        }
        let recip = col(&mut kb, "recip")?;
        kb.act(&recip, &sum, ActFunc::Reciprocal)?;
        // Pass 2: exp(x - max) / sum.
        for (i, cb) in blocks(cols, chunk).enumerate() {
            let w = cb.len();
            let xt = load(&mut kb, &cb)?;
            let e = kb.sbuf("exp", DType::F32, p, &[w])?;
            kb.activation(&e, &xt, ActFunc::Exp, 1.0, &neg_max, None)?;
            kb.free(xt)?;
            let yt = kb.sbuf("y", dtype, p, &[w])?;
            let engine = if i % 2 == 0 {
                Engine::Dve
            } else {
                Engine::Pool
            };
            kb.tensor_scalar_on(engine, &yt, &e, Step::new(AluOp::Mul, &recip), None)?;
            kb.free(e)?;
            let dsts = groups
                .iter()
                .map(|g| (g.clone(), y.block(rows_of(g), cb.clone())))
                .collect();
            stores.push(&mut kb, yt, dsts)?;
        }
        for t in [max, neg_max, sum, chunk_max, chunk_sum, rescale, recip] {
            kb.free(t)?;
        }
    }
    stores.flush(&mut kb)?;
    kb.finish()
}
