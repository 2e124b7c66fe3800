//! Lowering of [`GraphOp::Reduce`]: the reduced axes are moved last by a DMA permute (skipped
//! when they already are), the tensor is viewed as `[kept, reduced]`, and `reduce_rows` makes
//! one value per row, written straight into the result (whose elements are the kept axes in
//! order, with or without the size-1 reduced axes).
//!
//! Max and Min of bool tensors run on an f32 copy (cast in, reduce, cast back): the values are
//! 0 and 1, which f32 holds exactly, so the result is exact (any/all of the reduced elements).

use super::link::Binding;
use super::{LowerError, Lowering};
use tessera_ir::graph::{Node, ReduceKind, ReduceSpec, TensorType};
use tessera_ir::{DType, TensorId};
use tessera_kernels::library;

impl Lowering<'_> {
    pub(super) fn reduce(
        &mut self,
        node: &Node,
        spec: &ReduceSpec,
        x: TensorId,
        out: TensorId,
    ) -> Result<(), LowerError> {
        let mut in_ty = self.graph.ty(node.inputs[0]).clone();
        let bool_extremum =
            in_ty.dtype == DType::Bool && matches!(spec.kind, ReduceKind::Max | ReduceKind::Min);
        if !in_ty.dtype.is_float() && !bool_extremum {
            return Err(Self::unsupported(
                node,
                format!("{} on {} tensors", spec.kind.name(), in_ty.dtype),
            ));
        }
        if in_ty.elems() == 0 {
            return Err(Self::unsupported(node, "a reduction over an empty tensor"));
        }
        if bool_extremum {
            let work = DType::F32;
            let wide = self.scratch(&format!("{}.f32_in", node.name), work, &in_ty.shape);
            self.cast(node, x, wide, &in_ty.shape, DType::Bool, work)?;
            let out_shape = self.graph.ty(node.outputs[0]).shape.clone();
            let reduced = self.scratch(&format!("{}.f32_out", node.name), work, &out_shape);
            in_ty.dtype = work;
            self.reduce_rows_of(node, spec, &in_ty, wide, reduced)?;
            return self.cast(node, reduced, out, &out_shape, work, DType::Bool);
        }
        self.reduce_rows_of(node, spec, &in_ty, x, out)
    }

    /// `cast` of a whole tensor `x` (`from`) into `y` (`to`).
    fn cast(
        &mut self,
        node: &Node,
        x: TensorId,
        y: TensorId,
        shape: &[usize],
        from: DType,
        to: DType,
    ) -> Result<(), LowerError> {
        let k = self.kernel(node, library::cast(self.target, shape, from, to))?;
        self.link(
            &node.name,
            &k,
            &[Binding::whole("x", x), Binding::whole("y", y)],
        )
    }

    /// The reduction of `x` (of type `in_ty`, non-empty) into `out`.
    fn reduce_rows_of(
        &mut self,
        node: &Node,
        spec: &ReduceSpec,
        in_ty: &TensorType,
        x: TensorId,
        out: TensorId,
    ) -> Result<(), LowerError> {
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
