//! Lowering of [`GraphOp::Reduce`]: the reduced axes are moved last by a DMA permute (skipped
//! when they already are), the tensor is viewed as `[kept, reduced]`, and `reduce_rows` makes
//! one value per row, written straight into the result (whose elements are the kept axes in
//! order, with or without the size-1 reduced axes).

use super::link::Binding;
use super::{LowerError, Lowering};
use tessera_ir::TensorId;
use tessera_ir::graph::{Node, ReduceKind, ReduceSpec};
use tessera_kernels::library;

impl Lowering<'_> {
    pub(super) fn reduce(
        &mut self,
        node: &Node,
        spec: &ReduceSpec,
        x: TensorId,
        out: TensorId,
    ) -> Result<(), LowerError> {
        let in_ty = self.graph.ty(node.inputs[0]).clone();
        if !in_ty.dtype.is_float() {
            return Err(Self::unsupported(
                node,
                format!("{} on {} tensors", spec.kind.name(), in_ty.dtype),
            ));
        }
        if in_ty.elems() == 0 {
            return Err(Self::unsupported(node, "a reduction over an empty tensor"));
        }
        let (perm, rows, cols) = spec.rows_last(&in_ty.shape);
        if cols == 0 {
            return Err(Self::unsupported(node, "an empty reduction"));
        }
        let src = if perm.iter().enumerate().all(|(i, &p)| i == p) {
            x
        } else {
            let moved: Vec<usize> = perm.iter().map(|&p| in_ty.shape[p]).collect();
            let t = self.scratch(&format!("{}.moved", node.name), in_ty.dtype, &moved);
            let k = self.kernel(
                node,
                library::permute(self.target, &in_ty.shape, &perm, in_ty.dtype),
            )?;
            self.link(
                &node.name,
                &k,
                &[Binding::whole("x", x), Binding::whole("y", t)],
            )?;
            t
        };
        let k = match spec.kind {
            ReduceKind::ArgMax { last } | ReduceKind::ArgMin { last } => {
                if cols > library::arg_reduce::ARG_RESIDENT_COLS {
                    return Err(Self::unsupported(node, format!("{cols}-element rows")));
                }
                let max = matches!(spec.kind, ReduceKind::ArgMax { .. });
                library::arg_reduce_rows(self.target, rows, cols, max, last, in_ty.dtype)
            }
            kind => library::reduce_rows(self.target, rows, cols, kind, in_ty.dtype),
        };
        let k = self.kernel(node, k)?;
        self.link(
            &node.name,
            &k,
            &[Binding::whole("x", src), Binding::whole("y", out)],
        )
    }
}
