//! Lowering of [`GraphOp::Movement`](tessera_ir::graph::GraphOp::Movement) (Slice, Expand,
//! Tile, Pad) to the strided-DMA kernels of `library::strided`. The operator's per-axis index
//! maps ([`MovementOp::axis_maps`], the same ones the evaluator reads) become runs of constant
//! stride and one DMA pattern per piece; Tile is a single pattern over an interleaved index
//! space. Pad's fill value is its second operand, or a zero weight without one.

use super::link::Binding;
use super::{LowerError, Lowering};
use tessera_ir::TensorId;
use tessera_ir::graph::movement::right_aligned;
use tessera_ir::graph::{MovementOp, Node};
use tessera_kernels::library;

impl Lowering<'_> {
    pub(super) fn movement(
        &mut self,
        node: &Node,
        op: &MovementOp,
        ins: &[TensorId],
        out: TensorId,
    ) -> Result<(), LowerError> {
        let in_ty = self.graph.ty(node.inputs[0]).clone();
        let out_rank = self.graph.ty(node.outputs[0]).shape.len();
        let k = match op {
            MovementOp::Tile { repeats } => {
                library::tile(self.target, &in_ty.shape, repeats, in_ty.dtype)
            }
            _ => {
                // Expand may add leading axes; the others keep the rank.
                let in_shape = right_aligned(&in_ty.shape, out_rank);
                let maps = op.axis_maps(&in_ty.shape);
                let name = op.name().to_ascii_lowercase();
                library::axis_gather(self.target, &name, &in_shape, &maps, in_ty.dtype)
            }
        };
        let k = self.kernel(node, k)?;
        let value = if k.tensors.iter().any(|t| t.name == "value") {
            match ins.get(1) {
                Some(&v) => v,
                None => self.scalar_weight(&node.name, in_ty.dtype, 0.0),
            }
        } else {
            out
        };
        // Only the tensors the kernel declares are bound (an empty input is never read).
        let bindings: Vec<Binding<'_>> = [("x", ins[0]), ("value", value), ("y", out)]
            .into_iter()
            .filter(|(n, _)| k.tensors.iter().any(|t| t.name == *n))
            .map(|(n, t)| Binding::whole(n, t))
            .collect();
        self.link(&node.name, &k, &bindings)
    }
}
