//! Lowering of [`GraphOp::Scan`](tessera_ir::graph::GraphOp::Scan): the scanned axis is moved
//! last by a DMA permute (skipped when it already is), the tensor is viewed as `[rows, L]`,
//! `scan_rows` runs along each row, and a second permute puts the axis back.

use super::link::Binding;
use super::{LowerError, Lowering};
use tessera_ir::TensorId;
use tessera_ir::graph::{Node, ScanSpec};
use tessera_kernels::library;

impl Lowering<'_> {
    pub(super) fn scan(
        &mut self,
        node: &Node,
        spec: &ScanSpec,
        x: TensorId,
        out: TensorId,
    ) -> Result<(), LowerError> {
        let ty = self.graph.ty(node.inputs[0]).clone();
        let rank = ty.shape.len();
        let cols = ty.shape[spec.axis];
        let rows = ty.elems() / cols.max(1);
        if cols > library::scan::SCAN_RESIDENT_COLS {
            return Err(Self::unsupported(
                node,
                format!("a scan over {cols} elements"),
            ));
        }
        let k = self.kernel(
            node,
            library::scan_rows(
                self.target,
                rows,
                cols,
                spec.kind,
                spec.exclusive,
                spec.reverse,
                ty.dtype,
            ),
        )?;
        if spec.axis + 1 == rank {
            return self.link(
                &node.name,
                &k,
                &[Binding::whole("x", x), Binding::whole("y", out)],
            );
        }
        let mut perm: Vec<usize> = (0..rank).filter(|&i| i != spec.axis).collect();
        perm.push(spec.axis);
        let moved: Vec<usize> = perm.iter().map(|&p| ty.shape[p]).collect();
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        let t0 = self.scratch(&format!("{}.moved", node.name), ty.dtype, &moved);
        let t1 = self.scratch(&format!("{}.scanned", node.name), ty.dtype, &moved);
        let p = self.kernel(
            node,
            library::permute(self.target, &ty.shape, &perm, ty.dtype),
        )?;
        self.link(
            &node.name,
            &p,
            &[Binding::whole("x", x), Binding::whole("y", t0)],
        )?;
        self.link(
            &node.name,
            &k,
            &[Binding::whole("x", t0), Binding::whole("y", t1)],
        )?;
        let back = self.kernel(
            node,
            library::permute(self.target, &moved, &inverse, ty.dtype),
        )?;
        self.link(
            &node.name,
            &back,
            &[Binding::whole("x", t1), Binding::whole("y", out)],
        )
    }
}
