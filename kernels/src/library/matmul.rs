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
    matmul_t(target, m, k, n, false, false, in_dtype, out_dtype)
}

/// [`matmul`] with operands that may be stored transposed: `a` is `[k, m]` when `trans_a` and
/// `b` is `[n, k]` when `trans_b` (Gemm's transA/transB). Only the DMA access patterns change:
/// a transposed A is loaded straight (its rows are already K), a transposed B through a
/// transposing view.
#[allow(clippy::too_many_arguments)] // the shape triple, two layout flags and two dtypes
pub fn matmul_t(
    target: &TargetSpec,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    in_dtype: DType,
    out_dtype: DType,
) -> Result<TileProgram, KernelError> {
    matmul_spec(
        target,
        &MatmulSpec {
            m,
            k,
            n,
            trans_a,
            trans_b,
            in_dtype,
            compute_dtype: in_dtype,
            out_dtype,
        },
    )
}

/// Everything that shapes a matmul kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    /// Rows of the result.
    pub m: usize,
    /// The contracted size.
    pub k: usize,
    /// Columns of the result.
    pub n: usize,
    /// `a` is stored `[k, m]`.
    pub trans_a: bool,
    /// `b` is stored `[n, k]`.
    pub trans_b: bool,
    /// dtype of `a` and `b` in HBM.
    pub in_dtype: DType,
    /// dtype the tensor engine reads (the SBUF tiles); when it differs from `in_dtype` the DMA
    /// loads convert (how `--auto-cast matmul` feeds bf16 to the PE from fp32 tensors).
    pub compute_dtype: DType,
    /// dtype of `c`.
    pub out_dtype: DType,
}

/// The matmul kernel for a full [`MatmulSpec`].
pub fn matmul_spec(target: &TargetSpec, spec: &MatmulSpec) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "matmul";
    let MatmulSpec {
        m,
        k,
        n,
        trans_a,
        trans_b,
        in_dtype,
        compute_dtype,
        out_dtype,
    } = *spec;
    let a_shape = if trans_a { [k, m] } else { [m, k] };
    let b_shape = if trans_b { [n, k] } else { [k, n] };
    check_shape(KERNEL, "a", &a_shape)?;
    check_shape(KERNEL, "b", &b_shape)?;
    for d in [in_dtype, compute_dtype] {
        if !matches!(d, DType::F32 | DType::Bf16) {
            return Err(KernelError::Unsupported {
                kernel: KERNEL,
                detail: format!("dtype {d}; expected f32 or bf16"),
            });
        }
    }
    let (tile_m, tile_k, tile_n) = (
        target.matmul_max_m as usize,
        target.matmul_max_k as usize,
        target.matmul_max_n as usize,
    );

    let name = format!(
        "matmul_{m}x{k}x{n}{}{}{}",
        if trans_a { "_ta" } else { "" },
        if trans_b { "_tb" } else { "" },
        if compute_dtype != in_dtype {
            format!("_{compute_dtype}")
        } else {
            String::new()
        }
    );
    let mut kb = KernelBuilder::new(name, target);
    let a = kb.input("a", in_dtype, &a_shape)?;
    let b = kb.input("b", in_dtype, &b_shape)?;
    let c = kb.output("c", out_dtype, &[m, n])?;
    let k_tiles: Vec<_> = blocks(k, tile_k).collect();
    let last = k_tiles.len().saturating_sub(1);

    for mb in blocks(m, tile_m) {
        for nb in blocks(n, tile_n) {
            let acc = kb.psum("acc", DType::F32, parts(&mb), &[nb.len()])?;
            for (i, kr) in k_tiles.iter().enumerate() {
                // Stationary operand: A^T [K tile on partitions, M tile free].
                let a_t = kb.sbuf("a_t", compute_dtype, parts(kr), &[mb.len()])?;
                let a_src = if trans_a {
                    a.block(kr.clone(), mb.clone())
                } else {
                    a.block_t(mb.clone(), kr.clone())
                };
                kb.dma_copy(&a_t, a_src)?;
                let b_tile = kb.sbuf("b", compute_dtype, parts(kr), &[nb.len()])?;
                let b_src = if trans_b {
                    b.block_t(nb.clone(), kr.clone())
                } else {
                    b.block(kr.clone(), nb.clone())
                };
                kb.dma_copy(&b_tile, b_src)?;
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
