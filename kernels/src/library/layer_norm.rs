//! `layer_norm` over the last axis: `(x - mean) * rsqrt(var + eps) * gamma + beta`, in f32.
//!
//! Rows sit on partitions, 128 per block. The mean comes from a row sum; the variance from a
//! second pass, `sum((x - mean)^2)` on the activation engine (`Square` with bias `-mean` and
//! `accum`), which avoids the cancellation of `E[x^2] - mean^2`. `gamma` and `beta` reach every
//! partition through a stride-0 DMA view. Rows up to `chunk` columns stay in SBUF, with gamma
//! and beta loaded once for the whole kernel; longer rows are streamed three times (sum, squared
//! deviations, output) and gamma/beta are loaded per chunk, so there is no length limit.

use super::{DeferredStores, blocks, check_shape, dma_groups, parts, rows_cols};
use crate::{KernelBuilder, KernelError, Step, Tensor, Tile};
use std::ops::Range;
use tessera_ir::{ActFunc, AluOp, DType, Engine, ReduceOp, TargetSpec, TileProgram};

/// Rows up to this many columns are kept in SBUF: x, the normalised row and the output, plus
/// gamma and beta, stay under 100 KiB per partition.
pub const RESIDENT_COLS: usize = 4096;

/// `x`[shape], `gamma`[C], `beta`[C] -> `y`[shape], where C is the last axis.
pub fn layer_norm(
    target: &TargetSpec,
    shape: &[usize],
    dtype: DType,
    eps: f64,
) -> Result<TileProgram, KernelError> {
    layer_norm_chunked(target, shape, dtype, eps, RESIDENT_COLS)
}

/// [`layer_norm`] with an explicit chunk: rows of at most `chunk` columns are kept in SBUF,
/// longer ones are streamed `chunk` columns at a time.
pub fn layer_norm_chunked(
    target: &TargetSpec,
    shape: &[usize],
    dtype: DType,
    eps: f64,
    chunk: usize,
) -> Result<TileProgram, KernelError> {
    norm(target, shape, dtype, eps, chunk, false)
}

/// RMSNorm over the last axis: `x * rsqrt(mean(x^2) + eps) * gamma + beta`, the same kernel
/// with the mean taken as zero.
pub fn rms_norm(
    target: &TargetSpec,
    shape: &[usize],
    dtype: DType,
    eps: f64,
) -> Result<TileProgram, KernelError> {
    norm(target, shape, dtype, eps, RESIDENT_COLS, true)
}

fn norm(
    target: &TargetSpec,
    shape: &[usize],
    dtype: DType,
    eps: f64,
    chunk: usize,
    rms: bool,
) -> Result<TileProgram, KernelError> {
    check_shape("layer_norm", "x", shape)?;
    let chunk = chunk.max(1);
    let (rows, cols) = rows_cols(shape);
    let mut kb = KernelBuilder::new(if rms { "rms_norm" } else { "layer_norm" }, target);
    let x = kb.input("x", dtype, shape)?;
    let gamma = kb.input("gamma", dtype, &[cols])?;
    let beta = kb.input("beta", dtype, &[cols])?;
    let y = kb.output("y", dtype, shape)?;
    let p_max = target.partitions as usize;
    let resident = cols <= chunk;
    let width = cols.min(chunk);

    // Resident rows: gamma and beta on every partition, once for the kernel.
    let params = if resident {
        let p = rows.min(p_max) as u32;
        let g = kb.sbuf("gamma", DType::F32, p, &[cols])?;
        kb.dma_copy(&g, gamma.bcast_row(p, 0, 0..cols))?;
        let b = kb.sbuf("beta", DType::F32, p, &[cols])?;
        kb.dma_copy(&b, beta.bcast_row(p, 0, 0..cols))?;
        Some((g, b))
    } else {
        None
    };

    let mut stores = DeferredStores::new(width * dtype.size_bytes());
    for rb in blocks(rows, p_max) {
        let p = parts(&rb);
        if let Some((g, b)) = &params {
            resident_block(
                &mut kb,
                &x,
                &y,
                (g, b),
                &mut stores,
                &rb,
                (cols, dtype, eps, rms),
            )?;
            continue;
        }
        let col = |kb: &mut KernelBuilder<'_>, name| kb.sbuf(name, DType::F32, p, &[1]);
        let xt = kb.sbuf("x", DType::F32, p, &[width])?;
        let work = kb.sbuf("work", DType::F32, p, &[width])?;
        let yt = kb.sbuf("y", dtype, p, &[width])?;
        let sum = col(&mut kb, "sum")?;
        let part = col(&mut kb, "partial")?;
        let neg_mean = col(&mut kb, "neg_mean")?;
        let rstd = col(&mut kb, "rstd")?;
        let cv = |t: &Tile, w: usize| t.cols(0..p, 0..w);
        let chunks: Vec<Range<usize>> = blocks(cols, chunk).collect();
        let load = |kb: &mut KernelBuilder<'_>, cb: &Range<usize>| {
            kb.dma_copy(cv(&xt, cb.len()), x.block(rb.clone(), cb.clone()))
        };

        // Mean: a row sum, chunk by chunk (zero for RMSNorm).
        for (i, cb) in chunks.iter().enumerate().filter(|_| !rms) {
            if !resident || i == 0 {
                load(&mut kb, cb)?;
            }
            let target_col = if i == 0 { &sum } else { &part };
            kb.tensor_reduce(target_col, cv(&xt, cb.len()), ReduceOp::Sum, 1)?;
            if i > 0 {
                kb.tensor_tensor(&sum, &sum, AluOp::Add, &part)?;
            }
        }
        let n = cols as f64;
        if rms {
            kb.memset(&neg_mean, 0.0)?;
        } else {
            kb.tensor_scalar_on(
                Engine::Dve,
                &neg_mean,
                &sum,
                Step::new(AluOp::Div, n),
                Some(Step::new(AluOp::Mul, -1.0)),
            )?;
        }

        // Variance: sum of (x - mean)^2.
        for (i, cb) in chunks.iter().enumerate() {
            if !resident {
                load(&mut kb, cb)?;
            }
            let w = cb.len();
            let acc = if i == 0 { &sum } else { &part };
            kb.activation(
                cv(&work, w),
                cv(&xt, w),
                ActFunc::Square,
                1.0,
                &neg_mean,
                Some(&acc.all()),
            )?;
            if i > 0 {
                kb.tensor_tensor(&sum, &sum, AluOp::Add, &part)?;
            }
        }
        kb.tensor_scalar_on(
            Engine::Dve,
            &rstd,
            &sum,
            Step::new(AluOp::Div, n),
            Some(Step::new(AluOp::Add, eps)),
        )?;
        kb.act(&rstd, &rstd, ActFunc::Rsqrt)?;

        // Output: (x - mean) * rstd * gamma + beta.
        for cb in &chunks {
            if !resident {
                load(&mut kb, cb)?;
            }
            let w = cb.len();
            kb.tensor_scalar_on(
                Engine::Dve,
                cv(&work, w),
                cv(&xt, w),
                Step::new(AluOp::Add, &neg_mean),
                Some(Step::new(AluOp::Mul, &rstd)),
            )?;
            match &params {
                Some((g, b)) => {
                    kb.tensor_tensor(cv(&work, w), cv(&work, w), AluOp::Mul, g.part(0..p))?;
                    kb.tensor_tensor(cv(&yt, w), cv(&work, w), AluOp::Add, b.part(0..p))?;
                }
                None => streamed_affine(&mut kb, &gamma, &beta, p, cb, &work, &yt)?,
            }
            kb.dma_copy(y.block(rb.clone(), cb.clone()), cv(&yt, w))?;
        }
        for t in [xt, work, yt, sum, part, neg_mean, rstd] {
            kb.free(t)?;
        }
    }
    stores.flush(&mut kb)?;
    kb.finish()
}

/// `y = work * gamma[cols] + beta[cols]` with gamma and beta loaded for this chunk only.
fn streamed_affine(
    kb: &mut KernelBuilder<'_>,
    gamma: &Tensor,
    beta: &Tensor,
    p: u32,
    cb: &Range<usize>,
    work: &Tile,
    yt: &Tile,
) -> Result<(), KernelError> {
    let w = cb.len();
    let g = kb.sbuf("gamma", DType::F32, p, &[w])?;
    kb.dma_copy(&g, gamma.bcast_row(p, 0, cb.clone()))?;
    let b = kb.sbuf("beta", DType::F32, p, &[w])?;
    kb.dma_copy(&b, beta.bcast_row(p, 0, cb.clone()))?;
    kb.tensor_tensor(work.cols(0..p, 0..w), work.cols(0..p, 0..w), AluOp::Mul, &g)?;
    kb.tensor_tensor(yt.cols(0..p, 0..w), work.cols(0..p, 0..w), AluOp::Add, &b)?;
    kb.free(g)?;
    kb.free(b)?;
    Ok(())
}

/// One block of rows that fit in SBUF, with the work spread over the engines so that none of
/// them paces the kernel more than the DMA does: the squared deviations on ACT, the row sum,
/// the normalisation and the gamma product on DVE, the beta sum on POOL.
/// Tiles are fresh per block, loads and stores split over several DMA queues and stores
/// deferred, so consecutive blocks overlap.
fn resident_block(
    kb: &mut KernelBuilder<'_>,
    x: &Tensor,
    y: &Tensor,
    (gamma, beta): (&Tile, &Tile),
    stores: &mut DeferredStores,
    rb: &Range<usize>,
    (cols, dtype, eps, rms): (usize, DType, f64, bool),
) -> Result<(), KernelError> {
    let p = parts(rb);
    let col = |kb: &mut KernelBuilder<'_>, name| kb.sbuf(name, DType::F32, p, &[1]);
    let groups = dma_groups(p, cols * dtype.size_bytes());
    let rows_of = |g: &Range<u32>| rb.start + g.start as usize..rb.start + g.end as usize;
    let xt = kb.sbuf("x", DType::F32, p, &[cols])?;
    for g in &groups {
        kb.dma_copy(xt.part(g.clone()), x.rows(rows_of(g)))?;
    }
    let n = cols as f64;
    let work = kb.sbuf("work", DType::F32, p, &[cols])?;
    // The row sum comes from ACT's `accum` (DVE has the two full-width passes below); the
    // divisions by n stay on DVE, as in the streamed path, so they round the same way.
    let sum = col(kb, "sum")?;
    let neg_mean = col(kb, "neg_mean")?;
    if rms {
        kb.memset(&neg_mean, 0.0)?;
    } else {
        kb.activation(&work, &xt, ActFunc::Identity, 1.0, 0.0, Some(&sum.all()))?;
        kb.tensor_scalar_on(
            Engine::Dve,
            &neg_mean,
            &sum,
            Step::new(AluOp::Div, n),
            Some(Step::new(AluOp::Mul, -1.0)),
        )?;
    }
    let sq_sum = col(kb, "sq_sum")?;
    kb.activation(
        &work,
        &xt,
        ActFunc::Square,
        1.0,
        &neg_mean,
        Some(&sq_sum.all()),
    )?;
    let rstd = col(kb, "rstd")?;
    kb.tensor_scalar_on(
        Engine::Dve,
        &rstd,
        &sq_sum,
        Step::new(AluOp::Div, n),
        Some(Step::new(AluOp::Add, eps)),
    )?;
    kb.act(&rstd, &rstd, ActFunc::Rsqrt)?;
    kb.tensor_scalar_on(
        Engine::Dve,
        &work,
        &xt,
        Step::new(AluOp::Add, &neg_mean),
        Some(Step::new(AluOp::Mul, &rstd)),
    )?;
    kb.free(xt)?;
    kb.tensor_tensor(&work, &work, AluOp::Mul, gamma.part(0..p))?;
    let yt = kb.sbuf("y", dtype, p, &[cols])?;
    kb.tensor_tensor_on(Engine::Pool, &yt, &work, AluOp::Add, beta.part(0..p))?;
    for t in [work, sum, neg_mean, sq_sum, rstd] {
        kb.free(t)?;
    }
    let dsts = groups
        .iter()
        .map(|g| (g.clone(), y.rows(rows_of(g))))
        .collect();
    stores.push(kb, yt, dsts)
}
