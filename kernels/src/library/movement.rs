//! Data movement done by DMA alone, HBM to HBM: axis permutation (`permute`), dtype conversion
//! (`cast`) and concatenation (`concat`). No engine computes anything; the DMA access patterns
//! carry the layout change.
//!
//! An HBM access pattern has at most `max_free_dims + 1` (5) dimensions, so the shapes are first
//! simplified: size-1 axes dropped and neighbouring axes merged wherever both ends stay
//! contiguous across them. Whatever remains beyond 5 axes is unrolled into one DMA per index of
//! the outer axes, and very large transfers are split along the outermost axis so no single
//! descriptor moves more than [`MAX_DMA_ELEMS`] elements.

use super::check_shape;
use crate::{KernelBuilder, KernelError, Tensor};
use tessera_ir::{DType, TargetSpec, TileProgram};

/// Most elements one `dma_copy` of these kernels moves.
pub const MAX_DMA_ELEMS: u64 = 1 << 16;

/// `y = transpose(x, perm)`: axis `i` of `y` is axis `perm[i]` of `x`.
pub fn permute(
    target: &TargetSpec,
    shape: &[usize],
    perm: &[usize],
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "permute";
    check_shape(KERNEL, "x", shape)?;
    let mut seen = vec![false; shape.len()];
    if perm.len() != shape.len()
        || perm
            .iter()
            .any(|&p| p >= shape.len() || std::mem::replace(&mut seen[p], true))
    {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!("perm {perm:?} is not a permutation of {} axes", shape.len()),
        });
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let in_strides = row_major(shape);
    let mut kb = KernelBuilder::new(format!("permute_{}", dims_name(shape)), target);
    let x = kb.input("x", dtype, shape)?;
    let y = kb.output("y", dtype, &out_shape)?;
    let src_strides: Vec<i64> = perm.iter().map(|&p| in_strides[p]).collect();
    strided_copy(
        &mut kb,
        (&y, 0, &row_major(&out_shape)),
        (&x, 0, &src_strides),
        &out_shape,
    )?;
    kb.finish()
}

/// `y = x` converted from `from` to `to` (rounding as a store does).
pub fn cast(
    target: &TargetSpec,
    shape: &[usize],
    from: DType,
    to: DType,
) -> Result<TileProgram, KernelError> {
    check_shape("cast", "x", shape)?;
    let mut kb = KernelBuilder::new(format!("cast_{from}_to_{to}_{}", dims_name(shape)), target);
    let x = kb.input("x", from, shape)?;
    let y = kb.output("y", to, shape)?;
    let strides = row_major(shape);
    strided_copy(&mut kb, (&y, 0, &strides), (&x, 0, &strides), shape)?;
    kb.finish()
}

/// `y = concat(x0, x1, ..., axis)`; inputs are named `x0`, `x1`, ...
pub fn concat(
    target: &TargetSpec,
    shapes: &[Vec<usize>],
    axis: usize,
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "concat";
    let Some(first) = shapes.first() else {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: "no inputs".into(),
        });
    };
    let ok = axis < first.len()
        && shapes.iter().all(|s| {
            s.len() == first.len()
                && s.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b)
        });
    if !ok {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!("shapes {shapes:?} do not concatenate along axis {axis}"),
        });
    }
    let mut out_shape = first.clone();
    out_shape[axis] = shapes.iter().map(|s| s[axis]).sum();
    check_shape(KERNEL, "y", &out_shape)?;
    let mut kb = KernelBuilder::new(
        format!("concat_axis{axis}_{}", dims_name(&out_shape)),
        target,
    );
    let y = kb.output("y", dtype, &out_shape)?;
    let out_strides = row_major(&out_shape);
    let mut at = 0usize;
    for (i, s) in shapes.iter().enumerate() {
        if s[axis] == 0 {
            continue;
        }
        let x = kb.input(&format!("x{i}"), dtype, s)?;
        let offset = at as u64 * out_strides[axis] as u64;
        strided_copy(
            &mut kb,
            (&y, offset, &out_strides),
            (&x, 0, &row_major(s)),
            s,
        )?;
        at += s[axis];
    }
    kb.finish()
}

fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

fn dims_name(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// One end of a strided copy: the tensor, an element offset, and its strides per axis.
type End<'a> = (&'a Tensor, u64, &'a [i64]);

/// Copies the index space `shape` from `src` to `dst` with DMAs, merging axes where both ends
/// allow and unrolling what does not fit in one access pattern.
fn strided_copy(
    kb: &mut KernelBuilder,
    dst: End<'_>,
    src: End<'_>,
    shape: &[usize],
) -> Result<(), KernelError> {
    // (size, dst stride, src stride), size-1 axes dropped, then merged inner-to-outer.
    let mut axes: Vec<(usize, i64, i64)> = Vec::new();
    for (i, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        if let Some(last) = axes.last_mut()
            && last.1 == dst.2[i] * n as i64
            && last.2 == src.2[i] * n as i64
        {
            *last = (last.0 * n, dst.2[i], src.2[i]);
            continue;
        }
        axes.push((n, dst.2[i], src.2[i]));
    }
    if axes.is_empty() {
        axes.push((1, 1, 1));
    }
    let max_dims = kb.target().max_free_dims + 1;
    let split = axes.len().saturating_sub(max_dims);
    let (outer, inner) = axes.split_at(split);
    let inner_elems: u64 = inner.iter().map(|a| a.0 as u64).product();
    // Split the outermost inner axis so one DMA moves at most MAX_DMA_ELEMS elements.
    let per_row = inner_elems / inner[0].0 as u64;
    let rows_per_dma = (MAX_DMA_ELEMS / per_row.max(1)).max(1) as usize;
    let outer_count: usize = outer.iter().map(|a| a.0).product();
    for flat in 0..outer_count {
        let (mut d_off, mut s_off, mut rem) = (dst.1 as i64, src.1 as i64, flat);
        for a in outer.iter().rev() {
            let i = (rem % a.0) as i64;
            rem /= a.0;
            d_off += i * a.1;
            s_off += i * a.2;
        }
        let mut start = 0;
        while start < inner[0].0 {
            let rows = rows_per_dma.min(inner[0].0 - start);
            let mut d_dims = vec![(inner[0].1, rows as u32)];
            let mut s_dims = vec![(inner[0].2, rows as u32)];
            for a in &inner[1..] {
                d_dims.push((a.1, a.0 as u32));
                s_dims.push((a.2, a.0 as u32));
            }
            let d0 = d_off + start as i64 * inner[0].1;
            let s0 = s_off + start as i64 * inner[0].2;
            kb.dma_copy(dst.0.ap(d0 as u64, &d_dims), src.0.ap(s0 as u64, &s_dims))?;
            start += rows;
        }
    }
    Ok(())
}
