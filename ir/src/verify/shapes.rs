//! Per-opcode rules: operand shapes that must agree, dtypes an instruction accepts, and the
//! tensor engine's limits for `nc_matmul` and `nc_transpose`.
//!
//! These run after every operand passed its bounds checks, so views are non-empty, within
//! their buffers and of at most `max_free_dims` dimensions.

use super::{Fail, Rule, buffer, fail, view};
use crate::access::{DmaOperand, TileAccess};
use crate::dtype::DType;
use crate::isa::{AffineExpr, Op, Scalar};
use crate::program::{Buffer, HbmTensor};
use crate::target::TargetSpec;

/// An operand with its role, for messages.
#[derive(Clone, Copy)]
struct Role<'a> {
    role: &'static str,
    view: &'a TileAccess,
}

fn r<'a>(role: &'static str, view: &'a TileAccess) -> Role<'a> {
    Role { role, view }
}

impl Role<'_> {
    fn buf<'b>(&self, buffers: &'b [Buffer]) -> Result<&'b Buffer, Fail> {
        buffer(buffers, self.view.buf)
    }

    /// `dst %acc`.
    fn who(&self, buffers: &[Buffer]) -> Result<String, Fail> {
        Ok(format!("{} %{}", self.role, self.buf(buffers)?.name))
    }

    fn free(&self) -> u128 {
        view::view_elems(&self.view.dims)
    }
}

pub(super) fn check(
    t: &TargetSpec,
    tensors: &[HbmTensor],
    buffers: &[Buffer],
    op: &Op,
) -> Result<(), Fail> {
    match op {
        Op::Alloc { .. } | Op::Free { .. } | Op::Memset { .. } => Ok(()),
        Op::DmaCopy { dst, src } => dma_counts(tensors, buffers, dst, src),
        Op::Matmul {
            dst,
            stationary,
            moving,
            ..
        } => matmul(
            t,
            buffers,
            r("dst", dst),
            r("stationary", stationary),
            r("moving", moving),
        ),
        Op::Transpose { dst, src } => transpose(t, buffers, r("dst", dst), r("src", src)),
        Op::Activation {
            dst,
            src,
            scale,
            bias,
            accum,
            ..
        } => {
            let dst = r("dst", dst);
            same_shape(buffers, r("src", src), dst)?;
            per_partition(buffers, "scale", scale, dst)?;
            per_partition(buffers, "bias", bias, dst)?;
            if let Some(a) = accum {
                let a = r("accum", a);
                column(buffers, a, dst)?;
                let dtype = a.buf(buffers)?.dtype;
                if dtype != DType::F32 {
                    return fail(
                        Rule::WrongDType,
                        format!(
                            "{} is {dtype}; activation accumulates in f32",
                            a.who(buffers)?
                        ),
                    );
                }
            }
            Ok(())
        }
        Op::TensorTensor { dst, lhs, rhs, .. } => {
            same_shape(buffers, r("lhs", lhs), r("dst", dst))?;
            same_shape(buffers, r("rhs", rhs), r("dst", dst))
        }
        Op::TensorScalar {
            dst, src, op0, op1, ..
        } => {
            let dst = r("dst", dst);
            same_shape(buffers, r("src", src), dst)?;
            per_partition(buffers, "operand0", &op0.operand, dst)?;
            match op1 {
                Some(step) => per_partition(buffers, "operand1", &step.operand, dst),
                None => Ok(()),
            }
        }
        Op::TensorCopy { dst, src, .. } => same_shape(buffers, r("src", src), r("dst", dst)),
        Op::TensorReduce { dst, src, axes, .. } => {
            reduce(buffers, r("dst", dst), r("src", src), *axes)
        }
        Op::Iota { dst, expr, .. } => affine_dims(buffers, expr, r("dst", dst)),
        Op::AffineSelect { dst, src, expr, .. } => {
            same_shape(buffers, r("src", src), r("dst", dst))?;
            affine_dims(buffers, expr, r("dst", dst))
        }
        Op::Select {
            dst,
            pred,
            on_true,
            on_false,
            ..
        } => {
            let dst = r("dst", dst);
            same_shape(buffers, r("pred", pred), dst)?;
            same_shape(buffers, r("on_true", on_true), dst)?;
            same_shape(buffers, r("on_false", on_false), dst)
        }
    }
}

/// Element-wise operands pair elements in element order, so they need the same partition count
/// and the same free element count (their access patterns may differ).
fn same_shape(buffers: &[Buffer], a: Role<'_>, dst: Role<'_>) -> Result<(), Fail> {
    if a.view.partitions == dst.view.partitions && a.free() == dst.free() {
        return Ok(());
    }
    fail(
        Rule::ShapeMismatch,
        format!(
            "{} is {} partitions x {} free elements but {} is {} x {}; element-wise operands \
             need the same shape",
            a.who(buffers)?,
            a.view.partitions,
            a.free(),
            dst.who(buffers)?,
            dst.view.partitions,
            dst.free()
        ),
    )
}

/// A `[P, 1]` tile: one value per partition of `dst`.
fn column(buffers: &[Buffer], a: Role<'_>, dst: Role<'_>) -> Result<(), Fail> {
    if a.view.partitions == dst.view.partitions && a.free() == 1 {
        return Ok(());
    }
    fail(
        Rule::ShapeMismatch,
        format!(
            "{} is {} partitions x {} free elements; it must be {} partitions (as {}) x 1",
            a.who(buffers)?,
            a.view.partitions,
            a.free(),
            dst.view.partitions,
            dst.who(buffers)?
        ),
    )
}

fn per_partition(
    buffers: &[Buffer],
    role: &'static str,
    s: &Scalar,
    dst: Role<'_>,
) -> Result<(), Fail> {
    match s {
        Scalar::Imm(_) => Ok(()),
        Scalar::PerPartition(v) => column(buffers, r(role, v), dst),
    }
}

fn dma_counts(
    tensors: &[HbmTensor],
    buffers: &[Buffer],
    dst: &DmaOperand,
    src: &DmaOperand,
) -> Result<(), Fail> {
    // `dst @y` / `src %a` with the element count moved through that end.
    let end = |role: &str, end: &DmaOperand| -> Result<(String, u128), Fail> {
        Ok(match end {
            DmaOperand::Hbm(h) => {
                let name = tensors
                    .get(h.tensor.0 as usize)
                    .map_or("?", |t| t.name.as_str());
                (format!("{role} @{name}"), view::view_elems(&h.dims))
            }
            DmaOperand::Tile(t) => (
                format!("{role} %{}", buffer(buffers, t.buf)?.name),
                u128::from(t.partitions).saturating_mul(view::view_elems(&t.dims)),
            ),
        })
    };
    let ((dw, d), (sw, s)) = (end("dst", dst)?, end("src", src)?);
    if d == s {
        return Ok(());
    }
    fail(
        Rule::ShapeMismatch,
        format!("{dw} has {d} elements but {sw} has {s}; dma_copy moves element by element"),
    )
}

/// `tensor_reduce` folds the trailing `axes` free dims of `src`; `dst` keeps the leading ones.
fn reduce(buffers: &[Buffer], dst: Role<'_>, src: Role<'_>, axes: u8) -> Result<(), Fail> {
    let dims = src.view.dims.len();
    let axes = usize::from(axes);
    if axes == 0 || axes > dims {
        return fail(
            Rule::ShapeMismatch,
            format!(
                "axes={axes} but {} has {dims} free dimensions; reduce 1 to {dims} of them",
                src.who(buffers)?
            ),
        );
    }
    if dst.view.partitions != src.view.partitions {
        return fail(
            Rule::ShapeMismatch,
            format!(
                "{} has {} partitions but {} has {}; a reduction keeps the partitions",
                dst.who(buffers)?,
                dst.view.partitions,
                src.who(buffers)?,
                src.view.partitions
            ),
        );
    }
    let kept = view::view_elems(&src.view.dims[..dims - axes]);
    if dst.free() != kept {
        return fail(
            Rule::ShapeMismatch,
            format!(
                "{} has {} free elements but reducing the last {axes} of {}'s {dims} dims \
                 leaves {kept}",
                dst.who(buffers)?,
                dst.free(),
                src.who(buffers)?
            ),
        );
    }
    Ok(())
}

fn affine_dims(buffers: &[Buffer], expr: &AffineExpr, dst: Role<'_>) -> Result<(), Fail> {
    if expr.free.len() == dst.view.dims.len() {
        return Ok(());
    }
    fail(
        Rule::ShapeMismatch,
        format!(
            "the affine expression has {} free coefficients but {} has {} free dimensions; \
             one coefficient per dimension",
            expr.free.len(),
            dst.who(buffers)?,
            dst.view.dims.len()
        ),
    )
}

/// `dst[M, N] (+)= stationary[K, M]^T . moving[K, N]` on the 128x128 systolic array.
fn matmul(
    t: &TargetSpec,
    buffers: &[Buffer],
    dst: Role<'_>,
    stationary: Role<'_>,
    moving: Role<'_>,
) -> Result<(), Fail> {
    let k = stationary.view.partitions;
    if moving.view.partitions != k {
        return fail(
            Rule::ShapeMismatch,
            format!(
                "{} has {k} partitions but {} has {}; both are the contraction size K",
                stationary.who(buffers)?,
                moving.who(buffers)?,
                moving.view.partitions
            ),
        );
    }
    if k > t.matmul_max_k {
        return fail(
            Rule::MatmulLimit,
            format!(
                "contraction size K {k} exceeds {} ({}, {})",
                t.matmul_max_k,
                stationary.who(buffers)?,
                moving.who(buffers)?
            ),
        );
    }
    let (m, n) = (stationary.free(), moving.free());
    if m > u128::from(t.matmul_max_m) {
        return fail(
            Rule::MatmulLimit,
            format!(
                "stationary free size {m} exceeds {} ({})",
                t.matmul_max_m,
                stationary.who(buffers)?
            ),
        );
    }
    if n > u128::from(t.matmul_max_n) {
        return fail(
            Rule::MatmulLimit,
            format!(
                "moving free size {n} exceeds {} ({}; one PSUM bank holds {} f32 per partition)",
                t.matmul_max_n,
                moving.who(buffers)?,
                t.matmul_max_n
            ),
        );
    }
    if u128::from(dst.view.partitions) != m || dst.free() != n {
        return fail(
            Rule::ShapeMismatch,
            format!(
                "{} is {} partitions x {} free elements but the product is M {m} x N {n} \
                 (stationary free size x moving free size)",
                dst.who(buffers)?,
                dst.view.partitions,
                dst.free()
            ),
        );
    }
    let dst_buf = dst.buf(buffers)?;
    if dst_buf.dtype != DType::F32 {
        return fail(
            Rule::WrongDType,
            format!(
                "{} is {}; matmul results are f32",
                dst.who(buffers)?,
                dst_buf.dtype
            ),
        );
    }
    let (sd, md) = (stationary.buf(buffers)?.dtype, moving.buf(buffers)?.dtype);
    if sd != md || !sd.is_float() {
        return fail(
            Rule::WrongDType,
            format!(
                "{} is {sd} and {} is {md}; matmul operands have the same float dtype",
                stationary.who(buffers)?,
                moving.who(buffers)?
            ),
        );
    }
    // The accumulation group lives in one bank: its first and last byte share a bank.
    let Some((lo, hi)) = view::offset_range(dst.view.offset, &dst.view.dims) else {
        return Ok(());
    };
    let elem = dst_buf.dtype.size_bytes() as i128;
    let base = i128::from(dst_buf.placement.map_or(0, |p| p.byte_offset));
    let first = base.saturating_add(lo.saturating_mul(elem));
    let last = base
        .saturating_add(hi.saturating_mul(elem))
        .saturating_add(elem - 1);
    let bank = i128::from(t.psum_bank_bytes.max(1));
    if first / bank != last / bank {
        return fail(
            Rule::PsumBankCrossing,
            format!(
                "{} spans PSUM bytes {first}..={last}, crossing a {bank}-byte bank boundary; an \
                 accumulation group stays within one bank",
                dst.who(buffers)?
            ),
        );
    }
    Ok(())
}

/// `dst[f, p] = src[p, f]` through the tensor engine (a matmul with the identity).
fn transpose(t: &TargetSpec, buffers: &[Buffer], dst: Role<'_>, src: Role<'_>) -> Result<(), Fail> {
    let (p, f) = (src.view.partitions, src.free());
    let max = t.transpose_max;
    if p > max || f > u128::from(max) {
        return fail(
            Rule::TransposeLimit,
            format!(
                "{} is {p} partitions x {f} free elements; nc_transpose takes at most {max} x {max}",
                src.who(buffers)?
            ),
        );
    }
    if u128::from(dst.view.partitions) != f || dst.free() != u128::from(p) {
        return fail(
            Rule::ShapeMismatch,
            format!(
                "{} is {} partitions x {} free elements but the transpose of {} is {f} x {p}",
                dst.who(buffers)?,
                dst.view.partitions,
                dst.free(),
                src.who(buffers)?
            ),
        );
    }
    for o in [src, dst] {
        let dtype = o.buf(buffers)?.dtype;
        if !dtype.is_float() {
            return fail(
                Rule::WrongDType,
                format!(
                    "{} is {dtype}; nc_transpose moves float data",
                    o.who(buffers)?
                ),
            );
        }
    }
    Ok(())
}
