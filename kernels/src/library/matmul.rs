//! `matmul`: `c[m, n] = a[m, k] . b[k, n]` on the tensor engine.
//!
//! Tiling: M by 128 (the stationary operand's free size and the result's partitions), N by 512
//! (one PSUM bank of f32), K by 128 (the partitions contracted). `A^T` tiles are loaded by a
//! transposing DMA view, so no on-chip transpose is needed; each `[M, N]` block accumulates over
//! all K tiles in one PSUM buffer (start on the first, stop on the last), then the vector engine
//! evacuates it to SBUF, casting to the output dtype, and DMA stores it.

use super::{blocks, check_shape, parts};
use crate::{KernelBuilder, KernelError};
use tessera_ir::{DType, TargetSpec, TileProgram};

/// `a`[m, k] (in_dtype), `b`[k, n] (in_dtype) -> `c`[m, n] (out_dtype). `in_dtype` is f32 or
/// bf16; accumulation is f32 in PSUM.
pub fn matmul(
    target: &TargetSpec,
    m: usize,
    k: usize,
    n: usize,
    in_dtype: DType,
    out_dtype: DType,
) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "matmul";
    check_shape(KERNEL, "a", &[m, k])?;
    check_shape(KERNEL, "b", &[k, n])?;
    if !matches!(in_dtype, DType::F32 | DType::Bf16) {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!("input dtype {in_dtype}; expected f32 or bf16"),
        });
    }
    let (tile_m, tile_k, tile_n) = (
        target.matmul_max_m as usize,
        target.matmul_max_k as usize,
        target.matmul_max_n as usize,
    );

    let mut kb = KernelBuilder::new(format!("matmul_{m}x{k}x{n}"), target);
    let a = kb.input("a", in_dtype, &[m, k])?;
    let b = kb.input("b", in_dtype, &[k, n])?;
    let c = kb.output("c", out_dtype, &[m, n])?;
    let k_tiles: Vec<_> = blocks(k, tile_k).collect();
    let last = k_tiles.len().saturating_sub(1);

    for mb in blocks(m, tile_m) {
        for nb in blocks(n, tile_n) {
            let acc = kb.psum("acc", DType::F32, parts(&mb), &[nb.len()])?;
            for (i, kr) in k_tiles.iter().enumerate() {
                // Stationary operand: A^T [K tile on partitions, M tile free].
                let a_t = kb.sbuf("a_t", in_dtype, parts(kr), &[mb.len()])?;
                kb.dma_copy(&a_t, a.block_t(mb.clone(), kr.clone()))?;
                let b_tile = kb.sbuf("b", in_dtype, parts(kr), &[nb.len()])?;
                kb.dma_copy(&b_tile, b.block(kr.clone(), nb.clone()))?;
                kb.nc_matmul(&acc, &a_t, &b_tile, i == 0, i == last)?;
                kb.free(a_t)?;
                kb.free(b_tile)?;
            }
            let out = kb.sbuf("c", out_dtype, parts(&mb), &[nb.len()])?;
            kb.tensor_copy(&out, &acc)?;
            kb.free(acc)?;
            kb.dma_copy(c.block(mb.clone(), nb.clone()), &out)?;
            kb.free(out)?;
        }
    }
    kb.finish()
}
