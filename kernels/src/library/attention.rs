//! `attention`: `o = softmax(scale * q k^T + mask) v` for one (batch, head) slice, flash-style:
//! the `[S, T]` score matrix is never stored, only one block of it lives on chip at a time.
//!
//! Query rows sit on partitions, 128 per block. For each block of up to 512 keys (one PSUM bank
//! of f32 scores): the scores come from the tensor engine contracting over the head dimension
//! (`q^T` and `k^T` loaded with D on partitions, D in chunks of 128 accumulated in PSUM); the
//! activation engine scales them out of PSUM; the mask block is added; a running row maximum
//! `m` and row sum `l` are updated (`p = exp(s - m_new)` with its row sums from the same
//! activation instruction, and the previous sum and output rescaled by `exp(m_old - m_new)`);
//! `p` is transposed on the tensor engine 128 keys at a time so the key axis is contracted
//! against `v`, accumulating `p v` for the block in PSUM. At the end each row is divided by its
//! sum and stored.

use super::{blocks, check_shape};
use crate::{KernelBuilder, KernelError, Step};
use tessera_ir::{ActFunc, AluOp, DType, Engine, ReduceOp, TargetSpec, TileProgram};

/// Keys per score block: one 2 KiB PSUM bank of f32 per partition.
const KEY_BLOCK: usize = 512;

/// Shapes of one attention kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionKernelSpec {
    /// Query rows S.
    pub s: usize,
    /// Keys T.
    pub t: usize,
    /// Query/key width D.
    pub d: usize,
    /// Value width Dv (at most 512: the output block is one PSUM bank).
    pub dv: usize,
    /// Multiplies the scores.
    pub scale: f64,
    /// An additive `mask` input `[ms, mt]` with `ms` 1 or S and `mt` 1 or T (broadcast by
    /// stride-0 DMA views).
    pub mask: Option<(usize, usize)>,
    /// dtype of q, k, v, the mask and o.
    pub dtype: DType,
}

/// `q`[S, D], `k`[T, D], `v`[T, Dv] (and `mask`) -> `o`[S, Dv].
pub fn attention(
    target: &TargetSpec,
    spec: &AttentionKernelSpec,
) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "attention";
    let AttentionKernelSpec {
        s,
        t,
        d,
        dv,
        scale,
        mask,
        dtype,
    } = *spec;
    check_shape(KERNEL, "q", &[s, d])?;
    check_shape(KERNEL, "v", &[t, dv])?;
    if dv > KEY_BLOCK {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!("value width {dv} over {KEY_BLOCK}"),
        });
    }
    if !matches!(dtype, DType::F32 | DType::Bf16 | DType::F16) {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!("dtype {dtype}; expected f32, bf16 or f16"),
        });
    }
    let p_max = target.partitions as usize;
    let tr = target.transpose_max as usize;
    let mut kb = KernelBuilder::new(format!("attention_{s}x{t}x{d}x{dv}"), target);
    let q = kb.input("q", dtype, &[s, d])?;
    let k = kb.input("k", dtype, &[t, d])?;
    let v = kb.input("v", dtype, &[t, dv])?;
    let m_in = match mask {
        Some((ms, mt)) => Some((kb.input("mask", dtype, &[ms, mt])?, ms, mt)),
        None => None,
    };
    let o = kb.output("o", dtype, &[s, dv])?;
    let d_chunks: Vec<_> = blocks(d, p_max).collect();
    for qb in blocks(s, p_max) {
        let r = qb.len() as u32;
        // q^T chunks: [D chunk, rows].
        let mut q_t = Vec::with_capacity(d_chunks.len());
        for dc in &d_chunks {
            let tile = kb.sbuf("q_t", dtype, dc.len() as u32, &[qb.len()])?;
            kb.dma_copy(&tile, q.block_t(qb.clone(), dc.clone()))?;
            q_t.push(tile);
        }
        let mut m = kb.sbuf("row_max", DType::F32, r, &[1])?;
        kb.memset(&m, f64::from(f32::MIN))?;
        let mut l = kb.sbuf("row_sum", DType::F32, r, &[1])?;
        kb.memset(&l, 0.0)?;
        let mut acc = kb.sbuf("o_acc", DType::F32, r, &[dv])?;
        kb.memset(&acc, 0.0)?;
        for kblk in blocks(t, KEY_BLOCK) {
            let c = kblk.len();
            // Scores for this key block.
            let s_ps = kb.psum("scores", DType::F32, r, &[c])?;
            for (i, dc) in d_chunks.iter().enumerate() {
                let k_t = kb.sbuf("k_t", dtype, dc.len() as u32, &[c])?;
                kb.dma_copy(&k_t, k.block_t(kblk.clone(), dc.clone()))?;
                kb.nc_matmul(&s_ps, &q_t[i], &k_t, i == 0, i + 1 == d_chunks.len())?;
                kb.free(k_t)?;
            }
            let mut sc = kb.sbuf("scaled", DType::F32, r, &[c])?;
            kb.activation(&sc, &s_ps, ActFunc::Identity, scale, 0.0, None)?;
            kb.free(s_ps)?;
            if let Some((mt_tensor, ms, mt)) = &m_in {
                let mtile = kb.sbuf("mask", DType::F32, r, &[c])?;
                let row_stride = if *ms == 1 { 0 } else { *mt as i64 };
                let col_stride = if *mt == 1 { 0 } else { 1 };
                let offset = if *ms == 1 { 0 } else { qb.start * mt }
                    + if *mt == 1 { 0 } else { kblk.start };
                let src = mt_tensor.ap(offset as u64, &[(row_stride, r), (col_stride, c as u32)]);
                kb.dma_copy(&mtile, src)?;
                let masked = kb.sbuf("masked", DType::F32, r, &[c])?;
                kb.tensor_tensor(&masked, &sc, AluOp::Add, &mtile)?;
                kb.free(mtile)?;
                kb.free(std::mem::replace(&mut sc, masked))?;
            }
            // Running maximum and the rescaling of what came before.
            let blk_max = kb.sbuf("block_max", DType::F32, r, &[1])?;
            kb.tensor_reduce(&blk_max, &sc, ReduceOp::Max, 1)?;
            let m_new = kb.sbuf("row_max", DType::F32, r, &[1])?;
            kb.tensor_tensor(&m_new, &m, AluOp::Max, &blk_max)?;
            kb.free(blk_max)?;
            let neg = kb.sbuf("neg_max", DType::F32, r, &[1])?;
            kb.tensor_scalar(&neg, &m_new, AluOp::Mul, -1.0)?;
            let pexp = kb.sbuf("p", DType::F32, r, &[c])?;
            let blk_sum = kb.sbuf("block_sum", DType::F32, r, &[1])?;
            kb.activation(&pexp, &sc, ActFunc::Exp, 1.0, &neg, Some(&blk_sum.all()))?;
            kb.free(sc)?;
            kb.free(neg)?;
            let diff = kb.sbuf("max_change", DType::F32, r, &[1])?;
            kb.tensor_tensor(&diff, &m, AluOp::Sub, &m_new)?;
            let corr = kb.sbuf("rescale", DType::F32, r, &[1])?;
            kb.act(&corr, &diff, ActFunc::Exp)?;
            kb.free(diff)?;
            kb.free(std::mem::replace(&mut m, m_new))?;
            let l_new = kb.sbuf("row_sum", DType::F32, r, &[1])?;
            kb.tensor_scalar_on(
                Engine::Dve,
                &l_new,
                &l,
                Step::new(AluOp::Mul, &corr),
                Some(Step::new(AluOp::Add, &blk_sum)),
            )?;
            kb.free(blk_sum)?;
            kb.free(std::mem::replace(&mut l, l_new))?;
            // p v for this block: p^T (keys on partitions) against v, 128 keys at a time.
            let o_ps = kb.psum("pv", DType::F32, r, &[dv])?;
            let key_chunks: Vec<_> = blocks(c, tr.min(p_max)).collect();
            for (i, kc) in key_chunks.iter().enumerate() {
                let pt_ps = kb.psum("p_t", DType::F32, kc.len() as u32, &[qb.len()])?;
                kb.nc_transpose(&pt_ps, pexp.cols(0..r, kc.clone()))?;
                let pt = kb.sbuf("p_t", DType::F32, kc.len() as u32, &[qb.len()])?;
                kb.tensor_copy_on(Engine::Act, &pt, &pt_ps)?;
                kb.free(pt_ps)?;
                let vt = kb.sbuf("v", DType::F32, kc.len() as u32, &[dv])?;
                let rows = kblk.start + kc.start..kblk.start + kc.end;
                kb.dma_copy(&vt, v.block(rows, 0..dv))?;
                kb.nc_matmul(&o_ps, &pt, &vt, i == 0, i + 1 == key_chunks.len())?;
                kb.free(pt)?;
                kb.free(vt)?;
            }
            kb.free(pexp)?;
            let acc_new = kb.sbuf("o_acc", DType::F32, r, &[dv])?;
            let scaled = kb.sbuf("o_rescaled", DType::F32, r, &[dv])?;
            kb.tensor_scalar(&scaled, &acc, AluOp::Mul, &corr)?;
            kb.tensor_tensor(&acc_new, &scaled, AluOp::Add, &o_ps)?;
            kb.free(scaled)?;
            kb.free(o_ps)?;
            kb.free(corr)?;
            kb.free(std::mem::replace(&mut acc, acc_new))?;
        }
        let inv = kb.sbuf("inv_sum", DType::F32, r, &[1])?;
        kb.act(&inv, &l, ActFunc::Reciprocal)?;
        let out = kb.sbuf("o", dtype, r, &[dv])?;
        kb.tensor_scalar(&out, &acc, AluOp::Mul, &inv)?;
        kb.dma_copy(o.block(qb.clone(), 0..dv), &out)?;
        for tile in [inv, out, acc, m, l] {
            kb.free(tile)?;
        }
        for tile in q_t {
            kb.free(tile)?;
        }
    }
    kb.finish()
}
