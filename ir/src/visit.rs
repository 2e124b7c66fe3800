//! Mutable traversal of an instruction's operands, for passes that rename or relocate them
//! (linking kernels into one program, placing buffers).

use crate::access::{DmaOperand, HbmAccess, TileAccess};
use crate::isa::{Op, Scalar};

impl Op {
    /// Calls `tile` on every on-chip operand and `hbm` on every HBM operand.
    pub fn for_each_access_mut(
        &mut self,
        mut tile: impl FnMut(&mut TileAccess),
        mut hbm: impl FnMut(&mut HbmAccess),
    ) {
        let scalar = |s: &mut Scalar, tile: &mut dyn FnMut(&mut TileAccess)| {
            if let Scalar::PerPartition(t) = s {
                tile(t);
            }
        };
        match self {
            Op::Alloc { .. } | Op::Free { .. } => {}
            Op::DmaCopy { dst, src } => {
                for end in [dst, src] {
                    match end {
                        DmaOperand::Hbm(h) => hbm(h),
                        DmaOperand::Tile(t) => tile(t),
                    }
                }
            }
            Op::Matmul {
                dst,
                stationary,
                moving,
                ..
            } => {
                tile(dst);
                tile(stationary);
                tile(moving);
            }
            Op::Transpose { dst, src }
            | Op::TensorCopy { dst, src, .. }
            | Op::TensorReduce { dst, src, .. }
            | Op::AffineSelect { dst, src, .. } => {
                tile(dst);
                tile(src);
            }
            Op::Activation {
                dst,
                src,
                scale,
                bias,
                accum,
                ..
            } => {
                tile(dst);
                tile(src);
                scalar(scale, &mut tile);
                scalar(bias, &mut tile);
                if let Some(a) = accum {
                    tile(a);
                }
            }
            Op::TensorTensor { dst, lhs, rhs, .. } => {
                tile(dst);
                tile(lhs);
                tile(rhs);
            }
            Op::TensorScalar {
                dst, src, op0, op1, ..
            } => {
                tile(dst);
                tile(src);
                scalar(&mut op0.operand, &mut tile);
                if let Some(step) = op1 {
                    scalar(&mut step.operand, &mut tile);
                }
            }
            Op::Memset { dst, .. } | Op::Iota { dst, .. } => tile(dst),
            Op::Select {
                dst,
                pred,
                on_true,
                on_false,
                ..
            } => {
                tile(dst);
                tile(pred);
                tile(on_true);
                tile(on_false);
            }
        }
    }

    /// Replaces the buffer of `alloc`/`free` markers and of every tile operand via `buf`, and
    /// every HBM operand via `hbm`.
    pub fn remap(
        &mut self,
        mut buf: impl FnMut(crate::BufId) -> crate::BufId,
        hbm: impl FnMut(&mut HbmAccess),
    ) {
        if let Op::Alloc { buf: b } | Op::Free { buf: b } = self {
            *b = buf(*b);
            return;
        }
        self.for_each_access_mut(|t| t.buf = buf(t.buf), hbm);
    }
}
